'use strict';
// Running one executable under the script contract (SPEC §6, the Python executor's
// executable.py): started by path with no arguments and no shell, in its own process group
// (a new session), in the scripts directory, with a minimal environment plus JOB_COMMAND,
// JOB_RUN_ID, JOB_ATTEMPT and JOB_NAME; the request as one JSON line on stdin; stdout and
// stderr read into bounded tails. The last non-empty stdout line may report the result as
// JSON; otherwise the exit code decides.
//
// `runExecutable` never rejects for a script's fault: every outcome is a result to publish.

const { spawn } = require('node:child_process');
const util = require('node:util');
const text = require('./text');

const SUCCEEDED = 3;
const FAILED = 2;
// setTimeout's largest delay (24.8 days); a job's timeout_s is at most a day.
const MAX_TIMER_MS = 2 ** 31 - 1;

function sleep(ms) {
  let timer;
  const promise = new Promise((resolve) => {
    timer = setTimeout(resolve, Math.min(ms, MAX_TIMER_MS));
  });
  promise.clear = () => clearTimeout(timer);
  return promise;
}

function failed(feedback, output = '') {
  return { result: FAILED, feedback, output };
}

// SIGKILL a whole process group: the script's pid is its group id (it leads a new session).
function signalGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone already.
  }
}

// Groups of scripts running now, killed if this executor exits: Node cannot ask the kernel to
// kill a child when its parent dies (the Python executor uses PR_SET_PDEATHSIG), so this
// covers every exit but SIGKILL.
const groups = new Set();
process.on('exit', () => {
  for (const pid of groups) signalGroup(pid, 'SIGKILL');
});

function killAll() {
  for (const pid of groups) signalGroup(pid, 'SIGKILL');
}

// The JSON object an executable reads on stdin, with the Python executor's keys.
function requestDocument(request) {
  const document = {
    command: request.command,
    run_id: request.run_id,
    attempt: request.attempt,
    job: request.job.name,
    event: request.event === undefined ? null : request.event,
  };
  return JSON.stringify(document) + '\n';
}

// SIGTERM to the group; SIGKILL to what is left of it once the script exited or after
// `graceS`. Whether the script itself had to be killed.
async function terminate(pid, graceS, exited) {
  signalGroup(pid, 'SIGTERM');
  const grace = sleep(graceS * 1000);
  const ended = await Promise.race([exited.then(() => true), grace.then(() => false)]);
  grace.clear();
  // The group's other members (a script's children) go too, whatever the leader did.
  signalGroup(pid, 'SIGKILL');
  await exited;
  return !ended;
}

function systemError(err) {
  // "permission denied" rather than "spawn /path EACCES", as the Python executor says it.
  const known = typeof err.errno === 'number' ? util.getSystemErrorMap().get(err.errno) : null;
  return known ? known[1] : err.message;
}

// Run `script` for `request`; `cancelled` is a promise that a cancel of this attempt
// resolves with the CancelRequest. Resolves to {result, feedback, output}.
async function runExecutable(script, request, settings, cancelled) {
  const env = {
    ...settings.scriptEnv,
    JOB_COMMAND: request.command,
    JOB_RUN_ID: String(request.run_id),
    JOB_ATTEMPT: String(request.attempt),
    JOB_NAME: request.job.name,
  };
  let child;
  try {
    child = spawn(script.path, [], {
      cwd: settings.scriptsDir,
      env,
      detached: true, // setsid(): a process group of its own, to signal as a whole
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  } catch (err) {
    // A NUL byte in the command cannot go into the environment.
    return failed(`could not start ${script.name}: ${err.message}`);
  }
  const started = await new Promise((resolve) => {
    child.once('spawn', () => resolve(null));
    child.once('error', resolve);
  });
  if (started !== null) return failed(`could not start ${script.name}: ${systemError(started)}`);

  const pid = child.pid;
  groups.add(pid);
  const stdout = new text.TailBuffer(settings.resultScanBytes);
  const stderr = new text.TailBuffer(settings.outputTailBytes);
  child.stdout.on('data', (chunk) => stdout.feed(chunk));
  child.stderr.on('data', (chunk) => stderr.feed(chunk));
  // The 'exit' event comes when the process ended, even if a child it left holds the pipes.
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const drained = Promise.all([
    new Promise((resolve) => child.stdout.once('close', resolve)),
    new Promise((resolve) => child.stderr.once('close', resolve)),
  ]);
  // A script may exit, or never read its input: neither is an error of the run.
  child.stdin.on('error', () => {});
  child.stdin.end(requestDocument(request));

  let stopped = null; // {cancel, killed}
  let timedOut = false;
  let status;
  const timer = sleep(request.timeout_s * 1000);
  try {
    const first = await Promise.race([
      exited.then((exit) => ({ exit })),
      cancelled.then((cancel) => ({ cancel })),
      timer.then(() => ({ timeout: true })),
    ]);
    if (first.exit) {
      status = first.exit;
    } else if (first.cancel) {
      stopped = { cancel: first.cancel, killed: await terminate(pid, first.cancel.grace_s, exited) };
      status = await exited;
    } else {
      timedOut = true;
      await terminate(pid, settings.timeoutGraceS, exited);
      status = await exited;
    }
    // Children left behind may hold the pipes open: read a little longer, not forever.
    const drain = sleep(settings.exitDrainS * 1000);
    await Promise.race([drained, drain]);
    drain.clear();
  } finally {
    timer.clear();
    // A run's processes do not outlive it: what it left in its group goes now.
    signalGroup(pid, 'SIGKILL');
    groups.delete(pid);
    const settle = sleep(1000);
    await Promise.race([drained, settle]);
    settle.clear();
    child.stdout.destroy();
    child.stderr.destroy();
  }

  const limit = settings.outputTailBytes;
  const output = text.combine(stdout.text(limit), stderr.text(), limit);
  if (stopped) return failed(text.cancelFeedback(stopped.cancel, stopped.killed), output);
  if (timedOut) return failed(text.timeoutFeedback(request.timeout_s), output);
  const reported = text.resultLine(stdout.data());
  if (reported) {
    return {
      result: reported.result,
      feedback: text.shorten(reported.feedback, settings.feedbackMaxChars),
      output,
    };
  }
  if (status.code === 0) return { result: SUCCEEDED, feedback: '', output };
  let feedback = `${script.name} ${text.describeExit(status.code, status.signal)}`;
  const errors = stderr.text().trim();
  if (errors) {
    const room = Math.max(100, settings.feedbackMaxChars - feedback.length - 2);
    feedback += ': ' + text.shortenTail(errors, room);
  }
  return failed(feedback, output);
}

module.exports = { runExecutable, killAll, failed, SUCCEEDED, FAILED };
