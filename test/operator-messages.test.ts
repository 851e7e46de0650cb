/**
 * Errors that point at the fix (issue #14 item 6), through the real CLI:
 * run as a non-root user (nobody) on replicas only root may read, the
 * failure says to run as root; `inspect` says so for unreadable views; a
 * warning that several layers of a command meet (source, view, export)
 * is printed once per run.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chainfs } from './helpers/cli';
import { buildReplica, type BuiltReplica } from './helpers/replica-builder';
import { noBacking, removed } from './helpers/scenarios';
import { untilRunning } from './helpers/processes';
import { extractFixture } from './helpers/backupstore-read';

const breathe = () => new Promise<void>((resolve) => setImmediate(resolve));
afterEach(breathe);

const NOBODY = { uid: 65534, gid: 65534 };
const ROOT_HINT = /run chainfs as root/;
let tmp: string;
let closed: BuiltReplica;
let filesClosed: BuiltReplica;
let dirty: BuiltReplica;

/** Lets `nobody` walk from / down to `dir` (not into it). */
function traversable(dir: string): void {
  for (let d = path.dirname(dir); d.startsWith(tmp); d = path.dirname(d)) fs.chmodSync(d, 0o755);
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chainfs-op-msg-'));
  fs.chmodSync(tmp, 0o755);
  closed = buildReplica({ ...noBacking, name: 'closed' }, tmp); // the replica directory is 0700, as Longhorn leaves it
  traversable(closed.dir);
  filesClosed = buildReplica({ ...noBacking, name: 'files-closed' }, tmp);
  traversable(filesClosed.dir);
  fs.chmodSync(filesClosed.dir, 0o755);
  for (const f of fs.readdirSync(filesClosed.dir).filter((n) => n.endsWith('.img'))) fs.chmodSync(path.join(filesClosed.dir, f), 0o600);
  dirty = buildReplica({ ...removed, name: 'dirty-once', dirty: true }, tmp);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('as a non-root user', () => {
  it('an unreadable replica directory: one line naming it, permission denied, run as root (every command)', () => {
    for (const args of [['inspect', closed.dir], ['map', closed.dir], ['cat', closed.dir], ['export', closed.dir, '-']]) {
      const r = chainfs(args, NOBODY);
      expect(r.code, args.join(' ')).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^chainfs: ${closed.dir}.*permission denied`));
      expect(lines[0]).toMatch(ROOT_HINT);
    }
    // the JSON error says why
    const j = chainfs(['map', '--json', closed.dir], NOBODY);
    expect(JSON.parse(j.stdout.toString()).error.code).toBe('permission-denied');
    // root reads it: the hint is about privileges, not the replica
    expect(chainfs(['map', closed.dir]).code).toBe(0);
  });

  it('unreadable layer files: cat names the file and says run as root; inspect lists the views and says it once', () => {
    const r = chainfs(['cat', filesClosed.dir], NOBODY);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/volume-head-\d{3}\.img: .*permission denied .*run chainfs as root/);
    const i = chainfs(['inspect', filesClosed.dir], NOBODY);
    expect(i.code).toBe(0);
    const advice = i.stdout.toString().split('\n').filter((l) => ROOT_HINT.test(l));
    expect(advice).toEqual([expect.stringMatching(/^warning: \d+ view\(s\) are not readable by this user \(permission denied\)/)]);
    const j = JSON.parse(chainfs(['inspect', '--json', filesClosed.dir], NOBODY).stdout.toString());
    expect(j.warnings).toContainEqual(expect.objectContaining({ code: 'not-root' }));
    // as root there is nothing to advise
    expect(chainfs(['inspect', filesClosed.dir]).stdout.toString()).not.toMatch(ROOT_HINT);
  });

  it('a disk image only root may read (a v2 disk): permission denied, run as root, not "not a directory"', () => {
    const disk = path.join(tmp, 'disk.img');
    fs.writeFileSync(disk, Buffer.alloc(1 << 20), { mode: 0o600 });
    fs.chmodSync(disk, 0o600);
    for (const args of [['inspect', disk], ['cat', disk]]) {
      const r = chainfs(args, NOBODY);
      expect(r.code, args.join(' ')).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toEqual([expect.stringMatching(new RegExp(`^chainfs: ${disk}: .*permission denied`))]);
      expect(lines[0]).toMatch(ROOT_HINT);
    }
    expect(JSON.parse(chainfs(['inspect', '--json', disk], NOBODY).stdout.toString()).error.code).toBe('permission-denied');
    // root reads it: not an lvstore, nor a directory
    expect(chainfs(['inspect', disk]).stderr.toString()).toMatch(/not a directory \(a regular file\)/);
  });
});

describe('mount as a non-root user', () => {
  it('/dev/fuse only root may open: one line, permission denied, run as root; nothing mounted', () => {
    const open = (fs.statSync('/dev/fuse').mode & 0o006) === 0o006;
    const readable = buildReplica({ ...noBacking, name: 'readable' }, tmp);
    traversable(readable.dir);
    fs.chmodSync(readable.dir, 0o755);
    const mp = path.join(tmp, 'mp-nobody');
    fs.mkdirSync(mp, { mode: 0o777 });
    fs.chmodSync(mp, 0o777);
    const r = chainfs(['mount', readable.dir, mp], NOBODY);
    if (open) { // a machine where anyone may open /dev/fuse: the mount works as nobody (fusermount3)
      expect(r.code, r.stderr).toBe(0);
      chainfs(['umount', mp]);
      return;
    }
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual([expect.stringMatching(/^chainfs: \/dev\/fuse: permission denied: run chainfs as root/)]);
    expect(fs.readFileSync('/proc/self/mounts', 'utf8')).not.toContain(mp);
  });
});

describe('a live writer', () => {
  it('inspect names the process that has a replica file open for writing (text and JSON)', async () => {
    const head = path.join(dirty.dir, fs.readdirSync(dirty.dir).filter((n) => /^volume-head-\d{3}\.img$/.test(n))[0]);
    const fd = fs.openSync(head, 'r+');
    const writer = spawn('sleep', ['60'], { stdio: [fd, 'ignore', 'ignore'] });
    fs.closeSync(fd);
    try {
      await untilRunning(writer.pid, 'sleep');
      const text = chainfs(['inspect', dirty.dir]).stdout.toString();
      expect(text).toMatch(new RegExp(`^warning: ${head}: open for writing by process ${writer.pid} \\(sleep\\)`, 'm'));
      const j = JSON.parse(chainfs(['inspect', dirty.dir, '--json']).stdout.toString());
      expect(j.inUse).toEqual([expect.objectContaining({ code: 'in-use', file: head, message: expect.stringContaining(`process ${writer.pid}`) })]);
    } finally {
      writer.kill('SIGKILL');
    }
    await new Promise((r) => writer.once('exit', r));
    expect(chainfs(['inspect', dirty.dir]).stdout.toString()).not.toMatch(/open for writing/);
  });
});

describe('a warning is printed once per run', () => {
  it('map, cat, export (file and stdout): every warning line appears once', () => {
    const out = path.join(tmp, 'once.raw');
    for (const args of [['map', dirty.dir], ['cat', dirty.dir], ['export', dirty.dir, out, '-q'], ['export', dirty.dir, '-', '-q']]) {
      const r = chainfs(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      const warnings = r.stderr.split('\n').filter((l) => l.startsWith('chainfs: warning: '));
      expect(warnings.length, args.join(' ')).toBeGreaterThan(0);
      expect(warnings.some((w) => /Dirty is true/.test(w))).toBe(true);
      expect(new Set(warnings).size, r.stderr).toBe(warnings.length);
    }
  });
});

describe('stdout on a full disk (/dev/full): the output is lost, so the command says so', () => {
  /** Runs with stdout on /dev/full: one line naming stdout, no stack; returns the exit code. */
  function intoFull(args: string[]): number | null {
    const fd = fs.openSync('/dev/full', 'w');
    try {
      const r = chainfs(args, { stdio: ['ignore', fd, 'pipe'] });
      const lines = r.stderr.split('\n').filter((l) => l && !l.startsWith('chainfs: warning: '));
      expect(lines, args.join(' ')).toEqual(['chainfs: stdout: write failed: no space left on device']);
      return r.code;
    } finally {
      fs.closeSync(fd);
    }
  }

  it('inspect, map, mounts --json ([] at least), cat (a replica and a backup), export - (raw and qcow2): exit 1', () => {
    const target = extractFixture(fs.mkdtempSync(path.join(tmp, 'target-')));
    for (const args of [['inspect', dirty.dir], ['map', dirty.dir, '--json'], ['mounts', '--json'], ['cat', dirty.dir],
      ['cat', target, '--volume', 'vol-lz4'], ['export', dirty.dir, '-', '-q'], ['export', dirty.dir, '-', '-q', '--format', 'qcow2']]) {
      expect(intoFull(args), args.join(' ')).toBe(1);
    }
  });

  it('compare, diff and verify exit 2 (trouble), not 0 or 1 (same, different, damaged) with their report lost', () => {
    const target = extractFixture(fs.mkdtempSync(path.join(tmp, 'target-')));
    for (const args of [['compare', dirty.dir, dirty.dir, '-s', 's1'], ['diff', dirty.dir, '--from', 's1'],
      ['diff', dirty.dir, '--from', 's1', '--json'], ['verify', target], ['verify', target, '--json']]) {
      expect(intoFull(args), args.join(' ')).toBe(2);
    }
  });
});
