#!/usr/bin/env node
'use strict';
// A Job Manager executor in Node.js: it speaks the AMQP contract (docs/asyncapi.yaml) and
// runs the executables of its scripts directory. See README.md beside this file.
//
// For each job request from `<ns>.work`: publish `run.started` if the script still runs
// after JOBMANAGER_REPORT_STARTED_AFTER_S, run it, publish `run.succeeded` or `run.failed`,
// and only once the broker confirmed the result, ack the request. An executor that dies
// mid-run so leaves its request unacked, and the broker hands it to another one.

const amqp = require('amqplib');
const catalogue = require('./lib/catalogue');
const { load, SettingsError } = require('./lib/settings');
const { runExecutable, killAll, failed, SUCCEEDED } = require('./lib/run');
const { pyRepr } = require('./lib/text');

const REMEMBERED_CANCELS = 10000; // as the Python executor (cancels.py)
const ERROR_HEADER = 'x-jobmanager-error';

let settings;
let debugging = false;

function log(level, message) {
  if (level === 'DEBUG' && !debugging) return;
  process.stderr.write(`${new Date().toISOString()} ${level} executor-node: ${message}\n`);
}

const now = () => new Date().toISOString(); // UTC, with its "Z"

// -- validating what arrives (the pydantic models of libs/core/.../messages.py) -------------

const isInt = (v) => Number.isInteger(v);
const isText = (v) => typeof v === 'string';
const isTime = (v) => isText(v) && !Number.isNaN(Date.parse(v));
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// The problems of a job request, empty when it is valid.
function requestProblems(r) {
  if (!isObject(r)) return ['body: not a JSON object'];
  const problems = [];
  const check = (ok, field, what) => ok || problems.push(`${field}: ${what}`);
  check(isInt(r.run_id), 'run_id', 'an integer is required');
  check(isInt(r.attempt) && r.attempt >= 1, 'attempt', 'an integer of at least 1 is required');
  check(r.token === undefined || isInt(r.token), 'token', 'an integer is required');
  check(isObject(r.job) && isText(r.job.name) && (r.job.id === null || isInt(r.job.id)), 'job', 'an object with id and name is required');
  check(isText(r.script), 'script', 'a string is required');
  check(isText(r.command), 'command', 'a string is required');
  check(typeof r.timeout_s === 'number' && r.timeout_s > 0, 'timeout_s', 'a number greater than 0 is required');
  check(r.lane === null || isText(r.lane), 'lane', 'a string or null is required');
  check(r.event_id == null || isText(r.event_id), 'event_id', 'a string or null is required');
  check(isTime(r.not_before), 'not_before', 'a date-time is required');
  check(isTime(r.requested_at), 'requested_at', 'a date-time is required');
  check(r.event == null || isObject(r.event), 'event', 'an object or null is required');
  return problems;
}

function validCancel(c) {
  return isObject(c) && isInt(c.run_id) && isInt(c.attempt) && c.attempt >= 1 && isText(c.by)
    && c.by.length <= 200 && typeof c.grace_s === 'number' && c.grace_s >= 0 && isTime(c.at);
}

function parse(content) {
  try {
    return JSON.parse(content.toString('utf8'));
  } catch (err) {
    return undefined;
  }
}

// -- publishing with confirms ---------------------------------------------------------------

// Persistent JSON on a confirm channel: each publish resolves once the broker confirmed it,
// and rejects if the broker nacked it or returned it as unroutable (`mandatory`).
class Publisher {
  constructor(channel) {
    this.channel = channel;
    this.returned = new Set();
    // A return comes before the confirm of the same message, so it is known by then.
    channel.on('return', (message) => this.returned.add(message.properties.messageId));
  }

  publish(exchange, routingKey, body, { messageId, headers, mandatory = true } = {}) {
    const content = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const options = { persistent: true, contentType: 'application/json', messageId, headers, mandatory };
    return new Promise((resolve, reject) => {
      this.channel.publish(exchange, routingKey, content, options, (err) => {
        if (err) reject(err);
        else if (messageId !== undefined && this.returned.delete(messageId)) {
          reject(new Error(`no queue took ${routingKey} on ${exchange || 'the default exchange'}`));
        } else resolve();
      });
    });
  }
}

// -- the executor ---------------------------------------------------------------------------

class Executor {
  constructor(connection, names) {
    this.connection = connection;
    this.names = names;
    this.startedAt = now();
    this.inFlight = new Set(); // promises of the requests being handled
    this.stopping = false;
    this.heard = new Map(); // "run.attempt" -> CancelRequest, oldest first
    this.running = new Map(); // "run.attempt" -> resolve(CancelRequest) of a running script
    this.reports = 0;
  }

  async start() {
    const { names } = this;
    // Declare nothing the matcher owns: a queue declared with other arguments is a channel
    // error, and those arguments are the matcher's business. Only check that they exist.
    await this.waitForTopology();
    this.publisher = new Publisher(await this.connection.createConfirmChannel());

    // Cancels: an exclusive, auto-delete, server-named queue of our own on the executors'
    // control exchange, bound before any work is taken, so that no cancel of a run taken here
    // is missed. Consumed without acks: a lost one is sent again when its attempt reports a
    // start.
    const control = await this.connection.createChannel();
    const { queue } = await control.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
    await control.bindQueue(queue, names.executorControl, '');
    await control.consume(queue, (message) => message && this.onCancel(message), { noAck: true });

    this.work = await this.connection.createChannel();
    await this.work.prefetch(settings.concurrency);
    const { consumerTag } = await this.work.consume(names.work, (message) => this.onMessage(message));
    this.consumerTag = consumerTag;

    await this.report();
    this.reporter = setInterval(() => this.report(), settings.reportIntervalS * 1000);
    const scripts = [...catalogue.scan(settings.scriptsDir).keys()].sort();
    log('INFO', `executor ${settings.executorId} consuming ${names.work} (concurrency ${settings.concurrency}); `
      + `scripts in ${settings.scriptsDir}: ${scripts.join(', ') || 'none'}`);
  }

  // The matcher declares the topology; until it has, wait (each failed check closes its
  // channel, so each try has a channel of its own).
  async waitForTopology() {
    const { names } = this;
    for (let tries = 0; ; tries++) {
      const channel = await this.connection.createChannel();
      channel.on('error', () => {}); // a 404 here is expected while the matcher is not up
      try {
        await channel.checkExchange(names.results);
        await channel.checkExchange(names.executorControl);
        await channel.checkQueue(names.work);
        await channel.checkQueue(names.dead);
        await channel.close();
        return;
      } catch (err) {
        if (tries % 15 === 0) log('WARNING', `waiting for the matcher to declare the topology (${err.message})`);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  // The catalogue the admin API checks jobs against, and this executor's load. Advisory:
  // a report that fails is followed by the next one.
  async report() {
    const report = {
      executor: settings.executorId,
      scripts: [...catalogue.scan(settings.scriptsDir).keys()].sort(),
      concurrency: settings.concurrency,
      busy: this.inFlight.size,
      started_at: this.startedAt,
      at: now(),
    };
    try {
      this.reports += 1;
      await this.publisher.publish(this.names.results, 'executor.report', report, {
        messageId: `${settings.executorId}.report.${this.reports}`,
      });
    } catch (err) {
      log('WARNING', `could not report the scripts: ${err.message}`);
    }
  }

  onCancel(message) {
    const cancel = parse(message.content);
    if (!validCancel(cancel)) {
      log('WARNING', 'ignored an invalid cancel');
      return;
    }
    const key = `${cancel.run_id}.${cancel.attempt}`;
    this.heard.delete(key); // re-inserted last: the most recent are kept
    this.heard.set(key, cancel);
    if (this.heard.size > REMEMBERED_CANCELS) this.heard.delete(this.heard.keys().next().value);
    const stop = this.running.get(key);
    if (stop) {
      log('INFO', `run ${cancel.run_id} attempt ${cancel.attempt}: cancelled by ${cancel.by}; `
        + `stopping the script (grace ${cancel.grace_s} s)`);
      stop(cancel);
    }
  }

  onMessage(message) {
    if (message === null) {
      log('WARNING', `the broker cancelled our consumer of ${this.names.work}; stopping`);
      this.stop();
      return;
    }
    if (this.stopping) {
      // Delivered between our cancel and the broker's cancel-ok: give it back at once.
      this.work.nack(message, false, true);
      return;
    }
    const handling = this.handle(message).catch((err) => {
      log('ERROR', `a request was not handled (${err.message}); the broker will deliver it again`);
      try {
        this.work.nack(message, false, true);
      } catch {
        // The channel is gone: the broker requeues it anyway.
      }
    });
    this.inFlight.add(handling);
    handling.finally(() => this.inFlight.delete(handling));
  }

  async handle(message) {
    const request = parse(message.content);
    const problems = request === undefined ? ['body: not JSON'] : requestProblems(request);
    if (problems.length) {
      await this.park(message, `invalid job request: ${problems.slice(0, 5).join('; ')}`);
      return;
    }
    const key = `${request.run_id}.${request.attempt}`;
    const cancel = this.heard.get(key);
    if (cancel) {
      // The ledger ended the attempt already; nothing is to be reported.
      log('INFO', `run ${request.run_id} attempt ${request.attempt}: cancelled by ${cancel.by} `
        + 'before it started here; not run');
      this.work.ack(message);
      return;
    }
    const startedAt = now();
    log('INFO', `run ${request.run_id} attempt ${request.attempt}: ${request.script} started`);
    // Most scripts are done in milliseconds; reporting their start costs a delivery and a
    // ledger transaction for a state nobody sees. Only one still running after
    // JOBMANAGER_REPORT_STARTED_AFTER_S is reported as started; the result carries the start.
    let reporting = null;
    const reportTimer = setTimeout(() => {
      reporting = this.publisher.publish(this.names.results, 'run.started', {
        run_id: request.run_id,
        attempt: request.attempt,
        executor: settings.executorId,
        started_at: startedAt,
      }, { messageId: `${key}.started` });
      reporting.catch(() => {}); // awaited below; never an unhandled rejection meanwhile
    }, settings.reportStartedAfterS * 1000);

    let outcome;
    const cancelled = new Promise((resolve) => this.running.set(key, resolve));
    try {
      outcome = await this.run(request, cancelled);
    } finally {
      this.running.delete(key);
      clearTimeout(reportTimer);
    }
    if (reporting) await reporting; // keeps run.started ahead of the result
    const succeeded = outcome.result === SUCCEEDED;
    const result = {
      run_id: request.run_id,
      attempt: request.attempt,
      result: outcome.result,
      status: succeeded ? 'succeeded' : 'failed',
      feedback: outcome.feedback,
      started_at: startedAt,
      finished_at: now(),
      executor: settings.executorId,
      output_tail: outcome.output,
    };
    await this.publisher.publish(this.names.results, `run.${result.status}`, result, { messageId: `${key}.result` });
    this.work.ack(message); // only now: the result is safely in the broker
    log('INFO', `run ${request.run_id} attempt ${request.attempt}: ${request.script} ${result.status}`
      + (result.feedback ? `: ${result.feedback}` : ''));
  }

  async run(request, cancelled) {
    const scripts = catalogue.scan(settings.scriptsDir);
    const script = scripts.get(request.script);
    if (!script) {
      // What the Python executor answers (runner.py): a Failed result naming the problem.
      const known = [...scripts.keys()].sort().join(', ') || 'none';
      if (!catalogue.validName(request.script)) {
        return failed(`refused script name ${pyRepr(request.script)}: a script name is letters, digits, '_' and '-' `
          + `and starts with a letter or digit; known scripts: ${known}`);
      }
      return failed(`unknown script ${pyRepr(request.script)}: not in the scripts directory `
        + `${settings.scriptsDir}; known scripts: ${known}`);
    }
    try {
      return await runExecutable(script, request, settings, cancelled);
    } catch (err) {
      return failed(`executor error: ${err.name}: ${err.message}`);
    }
  }

  // Move a message we cannot handle to the dead queue with its reason, then ack it; if even
  // that fails, reject it: the work queue's dead-letter settings move it on.
  async park(message, reason) {
    log('WARNING', `parked a message from ${JSON.stringify(message.fields.exchange)}: ${reason}`);
    const headers = {
      ...(message.properties.headers || {}),
      [ERROR_HEADER]: reason.slice(0, 1000),
      'x-jobmanager-queue': message.fields.routingKey || '',
      'x-jobmanager-exchange': message.fields.exchange || '',
    };
    try {
      await this.publisher.publish('', this.names.dead, message.content, {
        headers,
        messageId: message.properties.messageId,
      });
      this.work.ack(message);
    } catch (err) {
      log('ERROR', `could not park a message (${err.message}); rejecting it to the dead-letter queue`);
      this.work.reject(message, false);
    }
  }

  // Take no more work, let the runs in flight finish and publish their results, then close.
  async stop() {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.reporter);
    try {
      if (this.consumerTag) await this.work.cancel(this.consumerTag);
    } catch {
      // The channel is closed already: nothing more comes.
    }
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
    log('INFO', `executor ${settings.executorId} stopped`);
    await this.connection.close();
  }
}

async function main() {
  try {
    settings = load();
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    process.stderr.write(`error: ${err.message}\n`);
    return 1;
  }
  debugging = settings.debug;
  const fs = require('node:fs');
  if (!fs.existsSync(settings.scriptsDir) || !fs.statSync(settings.scriptsDir).isDirectory()) {
    process.stderr.write(`error: the scripts directory ${settings.scriptsDir} does not exist; `
      + 'set JOBMANAGER_SCRIPTS_DIR to a directory of scripts\n');
    return 1;
  }
  const ns = settings.namespace;
  const names = {
    work: `${ns}.work`,
    dead: `${ns}.dead`,
    results: `${ns}.results`,
    executorControl: `${ns}.control.executors`,
  };
  let connection;
  try {
    connection = await amqp.connect(settings.amqpUrl, {
      clientProperties: { connection_name: `jobmanager-executor-node ${settings.executorId}` },
    });
  } catch (err) {
    process.stderr.write(`error: RabbitMQ is not answering at ${settings.amqpUrl.replace(/(:\/\/[^:/@]+):[^@/]*@/, '$1:***@')} `
      + `(${err.message})\n`);
    return 1;
  }
  const executor = new Executor(connection, names);
  // No reconnecting here: on a lost connection the executor exits (after killing its
  // scripts) and its supervisor starts it again; the broker redelivers what was unacked.
  connection.on('error', (err) => log('ERROR', `connection: ${err.message}`));
  connection.on('close', () => {
    if (executor.stopping && executor.inFlight.size === 0) return;
    log('ERROR', 'the connection to the broker was lost; exiting (unacked requests are delivered again)');
    process.exit(1);
  });

  let signals = 0;
  const onSignal = (name) => {
    signals += 1;
    if (signals === 1) {
      log('INFO', `${name}: stopping after the runs in flight (again to stop now)`);
      executor.stop().then(() => process.exit(0), () => process.exit(1));
    } else {
      log('WARNING', `${name} again: killing the runs in flight; the broker will deliver them again`);
      killAll();
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  await executor.start();
  return null; // runs until a signal
}

main().then(
  (code) => {
    if (code !== null) process.exit(code);
  },
  (err) => {
    log('ERROR', err.stack || String(err));
    killAll();
    process.exit(1);
  },
);
