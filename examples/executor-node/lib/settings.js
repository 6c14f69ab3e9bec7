'use strict';
// The executor's settings, from the same environment variables as the Python executor's
// (services/executor/.../config.py and libs/core/.../config.py), with the same defaults.

const os = require('node:os');
const path = require('node:path');

class SettingsError extends Error {}

function number(env, name, fallback, { min = -Infinity, max = Infinity, integer = false } = {}) {
  const raw = env[`JOBMANAGER_${name}`];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
    throw new SettingsError(`JOBMANAGER_${name}=${raw}: must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}`);
  }
  return value;
}

function load(env = process.env) {
  const amqpUrl = env.JOBMANAGER_AMQP_URL || 'amqp://guest:guest@localhost:5672/';
  if (!/^amqps?:\/\//.test(amqpUrl)) throw new SettingsError('JOBMANAGER_AMQP_URL: must be an amqp:// or amqps:// URL');
  const namespace = env.JOBMANAGER_NAMESPACE || 'jobmanager';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/.test(namespace)) {
    throw new SettingsError("JOBMANAGER_NAMESPACE: letters, digits, '_', '.', '-' only (at most 100)");
  }
  const executorId = env.JOBMANAGER_EXECUTOR_ID || `${os.hostname()}-${process.pid}`;
  if (executorId.length > 200) throw new SettingsError('JOBMANAGER_EXECUTOR_ID: at most 200 characters');

  // Scripts get a minimal environment: nothing of the executor's (the broker URL above all),
  // only PATH, LANG, HOME and the variables JOBMANAGER_SCRIPT_ENV names.
  const scriptEnv = {};
  for (const name of (env.JOBMANAGER_SCRIPT_ENV || '').split(',').map((n) => n.trim()).filter(Boolean)) {
    if (name.startsWith('JOBMANAGER_')) throw new SettingsError(`JOBMANAGER_SCRIPT_ENV: ${name} is the executor's own setting`);
    if (env[name] !== undefined) scriptEnv[name] = env[name];
  }
  scriptEnv.HOME = scriptEnv.HOME || env.HOME || '/';
  scriptEnv.PATH = env.JOBMANAGER_SCRIPT_SEARCH_PATH || '/usr/local/bin:/usr/bin:/bin';
  scriptEnv.LANG = 'C.UTF-8';

  return {
    amqpUrl,
    namespace,
    executorId,
    scriptsDir: path.resolve(env.JOBMANAGER_SCRIPTS_DIR || 'scripts'),
    concurrency: number(env, 'CONCURRENCY', 4, { min: 1, max: 256, integer: true }),
    outputTailBytes: number(env, 'OUTPUT_TAIL_BYTES', 4096, { min: 256, max: 65536, integer: true }),
    resultScanBytes: number(env, 'RESULT_SCAN_BYTES', 65536, { min: 1024, max: 16 * 1024 * 1024, integer: true }),
    feedbackMaxChars: number(env, 'FEEDBACK_MAX_CHARS', 4000, { min: 100, max: 65536, integer: true }),
    exitDrainS: number(env, 'EXIT_DRAIN_S', 0.25, { min: 0.001, max: 10 }),
    reportIntervalS: number(env, 'REPORT_INTERVAL_S', 30, { min: 0.001, max: 3600 }),
    reportStartedAfterS: number(env, 'REPORT_STARTED_AFTER_S', 0.05, { min: 0, max: 60 }),
    // This executor's own: how long a script past its timeout has between SIGTERM and
    // SIGKILL. 0, the default, is what the Python executor does (SIGKILL at once).
    timeoutGraceS: number(env, 'TIMEOUT_GRACE_S', 0, { min: 0, max: 60 }),
    debug: (env.JOBMANAGER_LOG_LEVEL || 'INFO').toUpperCase() === 'DEBUG',
    scriptEnv,
  };
}

module.exports = { load, SettingsError };
