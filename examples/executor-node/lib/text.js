'use strict';
// Bounded handling of what scripts print, and the wording of the executor's own Feedback.
// Both follow the Python executor (services/executor: output.py, outcome.py) word for word:
// operators and the ledger see the same texts whichever executor ran a script.

// Keeps the last `limit` bytes fed into it and counts what it dropped, so that a script that
// prints gigabytes costs a bounded amount of memory.
class TailBuffer {
  constructor(limit) {
    this.limit = Math.max(1, limit);
    this.total = 0;
    this.chunks = [];
    this.size = 0;
  }

  feed(chunk) {
    this.total += chunk.length;
    this.chunks.push(chunk);
    this.size += chunk.length;
    // Trimming only when twice over the limit keeps the cost per byte constant.
    if (this.size > 2 * this.limit) this.compact();
  }

  compact() {
    const joined = Buffer.concat(this.chunks);
    const kept = joined.subarray(Math.max(0, joined.length - this.limit));
    this.chunks = [kept];
    this.size = kept.length;
  }

  data() {
    this.compact();
    return this.chunks[0];
  }

  get dropped() {
    return this.total - Math.min(this.size, this.limit);
  }

  // The tail as text, at most `limit` bytes of it, marked when something was cut.
  text(limit = this.limit) {
    const data = this.data();
    const omitted = this.dropped + Math.max(0, data.length - limit);
    let text = data.subarray(Math.max(0, data.length - limit)).toString('utf8');
    if (!omitted) return text;
    // A cut may split a multi-byte character; its remains decode to U+FFFD and are dropped.
    text = text.replace(/^\uFFFD+/, '');
    return `[… ${omitted} bytes omitted]\n${text}`;
  }
}

// `text` cut to at most `limit` characters, keeping its beginning.
function shorten(text, limit) {
  return text.length <= limit ? text : text.slice(0, Math.max(0, limit - 1)) + '…';
}

// `text` cut to at most `limit` characters, keeping its end (where errors usually are).
function shortenTail(text, limit) {
  return text.length <= limit ? text : '…' + text.slice(text.length - Math.max(0, limit - 1));
}

// The result an executable reported on its last non-empty stdout line, if any: only a JSON
// object whose `result` is 2 or 3 decides (true is not 3, "3" is not 3).
function resultLine(stdout) {
  const lines = stdout.toString('utf8').split(/\r\n|\r|\n/);
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i].trim();
    if (!line) continue;
    let value;
    try {
      value = JSON.parse(line);
    } catch {
      return null;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
    if (value.result !== 2 && value.result !== 3) return null;
    const feedback = value.feedback;
    return { result: value.result, feedback: feedback == null ? '' : String(feedback) };
  }
  return null;
}

// One output tail from both streams, stderr last so that errors survive the cut.
function combine(stdout, stderr, limit) {
  const parts = stdout.trim() ? [stdout.replace(/\n+$/, '')] : [];
  if (stderr.trim()) parts.push('[stderr]\n' + stderr.replace(/\n+$/, ''));
  return shortenTail(parts.join('\n'), limit);
}

// How Python's repr() writes a float: 1 -> "1.0", 0.5 -> "0.5". The Feedback texts below
// are compared by the ledger and by people, so they must read as the Python executor's.
function pyFloat(value) {
  return Number.isInteger(value) ? value.toFixed(1) : String(value);
}

// How Python's repr() writes a short string: in single quotes unless it holds one.
function pyRepr(text) {
  if (text.includes("'") && !text.includes('"')) return `"${text}"`;
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

// `exited with code 7` or `was killed by signal SIGSEGV`.
function describeExit(code, signal) {
  return signal ? `was killed by signal ${signal}` : `exited with code ${code}`;
}

function timeoutFeedback(timeoutS) {
  return `timed out after ${pyFloat(timeoutS)} s; the script and its child processes were killed`;
}

// It must begin with the ledger's own Feedback ("cancelled by <by>"): that is how the ledger
// recognises an executor's account of a cancel and completes the run's Feedback with it.
function cancelFeedback(cancel, killed) {
  const ending = killed
    ? `the script was still running ${pyFloat(cancel.grace_s)} s after SIGTERM and was killed (SIGKILL)`
    : 'the script ended on SIGTERM';
  return `cancelled by ${cancel.by}; ${ending}`;
}

module.exports = {
  TailBuffer,
  shorten,
  shortenTail,
  resultLine,
  combine,
  pyRepr,
  describeExit,
  timeoutFeedback,
  cancelFeedback,
};
