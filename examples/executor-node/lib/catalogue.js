'use strict';
// The script catalogue: the allow-list of what this executor may run is its scripts
// directory, by construction. The rules are the Python executor's (scripts.py), so that a
// directory means the same to both: a script is a regular file directly in the directory
// with its execute bit set; its name is the file name without its last extension and must
// match NAME_PATTERN, so that it can never look like a path or an option.
//
// `NAME.py` files are the Python executor's own kind (a module defining run()): this executor
// cannot run those, so it neither runs nor reports them.

const fs = require('node:fs');
const path = require('node:path');

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;
const BACKUP_SUFFIXES = ['~', '.bak', '.orig', '.rej', '.swp', '.swo', '.tmp', '.old', '.pyc'];

function validName(name) {
  return NAME_PATTERN.test(name);
}

function inspect(root, filename) {
  if (filename.startsWith('.') || filename.startsWith('_')) return null;
  if (BACKUP_SUFFIXES.some((suffix) => filename.endsWith(suffix))) return null;
  const dot = filename.lastIndexOf('.');
  const name = dot > 0 ? filename.slice(0, dot) : filename;
  if (!validName(name)) return null;
  if (dot > 0 && filename.slice(dot + 1) === 'py') return null; // a Python executor's script
  let resolved;
  try {
    resolved = fs.realpathSync(path.join(root, filename));
  } catch {
    return null; // a broken link or a link loop
  }
  // A link is followed only if it stays inside the directory.
  if (path.relative(root, resolved).startsWith('..')) return null;
  try {
    if (!fs.statSync(resolved).isFile()) return null;
    fs.accessSync(resolved, fs.constants.X_OK);
  } catch {
    return null;
  }
  return { name, path: resolved };
}

// All scripts by name. Read afresh on every call: a directory of a few scripts costs a
// readdir and a stat each, and files added or made executable count at once.
function scan(directory) {
  const found = new Map();
  let root;
  let entries;
  try {
    root = fs.realpathSync(directory);
    entries = fs.readdirSync(root).sort();
  } catch {
    return found;
  }
  for (const filename of entries) {
    const script = inspect(root, filename);
    if (script !== null && !found.has(script.name)) found.set(script.name, script);
  }
  return found;
}

module.exports = { scan, validName };
