/**
 * Mount points and the daemons behind them: /proc/self/mountinfo, the
 * pid file each daemon leaves in the run directory, stale mounts (a daemon
 * that died leaves "Transport endpoint is not connected"), fusermount.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ChainfsError } from '../errors';

export interface MountEntry {
  /** The mount's id in mountinfo: a new mount at the same place gets a new one. */
  id: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** The file system type of every chainfs mount in mountinfo (FUSE with subtype=chainfs). */
export const CHAINFS_FSTYPE = 'fuse.chainfs';

/** Octal escapes in mountinfo (\040 for a space, ...). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function mountAt(mountPoint: string): MountEntry | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  let found: MountEntry | undefined;
  for (const line of text.split('\n')) {
    const parts = line.split(' ');
    const dash = parts.indexOf('-');
    if (dash < 0 || parts.length < dash + 3) continue;
    if (unescape(parts[4]) === mountPoint) {
      found = { id: Number(parts[0]), mountPoint, fsType: parts[dash + 1], source: unescape(parts[dash + 2]) }; // the last one is on top
    }
  }
  return found;
}

/** Every chainfs mount of this mount namespace (fuse.chainfs in /proc/self/mountinfo), whoever made it. */
export function chainfsMounts(): MountEntry[] {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const parts = line.split(' ');
    const dash = parts.indexOf('-');
    if (dash < 0 || parts.length < dash + 3 || parts[dash + 1] !== CHAINFS_FSTYPE) continue;
    out.push({ id: Number(parts[0]), mountPoint: unescape(parts[4]), fsType: parts[dash + 1], source: unescape(parts[dash + 2]) });
  }
  return out;
}

/** The absolute mount point path, without following a stale FUSE mount (realpath would fail). */
export function absoluteMountPoint(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/**
 * True if `p` is a FUSE mount whose daemon is gone ("Transport endpoint is
 * not connected"). Lists the directory: attributes may come from the
 * kernel's cache, a directory listing always asks the daemon. Never call
 * this from the daemon on its own mount (a synchronous call would deadlock).
 */
export function isStale(p: string): boolean {
  const m = mountAt(p);
  if (!m || !m.fsType.startsWith('fuse')) return false;
  try {
    fs.readdirSync(p);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOTCONN';
  }
}

export function fusermount(args: string[]): { ok: boolean; message: string } {
  const r = spawnSync('fusermount', args, { encoding: 'utf8' });
  if (r.error) return { ok: false, message: `fusermount: ${r.error.message}` };
  return { ok: r.status === 0, message: (r.stderr || '').trim() };
}

// --- pid files -------------------------------------------------------------

/** The pid file of a mount daemon: `<run dir>/<encoded mount point>.json`. */
export interface DaemonRecord {
  pid: number;
  /** The source as the user named it (the catalog's label). */
  replica: string;
  /** The daemon's log file ('' when it logs to stderr: -f). */
  log: string;
  /** When the mount became ready (ISO 8601 UTC); absent in records of older versions. */
  since?: string;
}

export function runDir(): string {
  if (process.getuid?.() === 0) return '/run/chainfs';
  return path.join(process.env.XDG_RUNTIME_DIR || os.tmpdir(), `chainfs-${process.getuid?.() ?? 'user'}`);
}

function recordPath(mountPoint: string): string {
  return path.join(runDir(), `${encodeURIComponent(mountPoint)}.json`);
}

export function writeRecord(mountPoint: string, rec: DaemonRecord): void {
  fs.mkdirSync(runDir(), { recursive: true, mode: 0o700 });
  fs.writeFileSync(recordPath(mountPoint), JSON.stringify(rec));
}

/**
 * Claims `mountPoint` for this daemon from its checks until it is mounted
 * (release then): two `chainfs mount`s started at once on one empty
 * directory both passed the checks and stacked two mounts there, with one
 * record. The claim is an flock(2) on `<mount point>.lock` in the run
 * directory, held through this process's descriptor: the kernel drops it
 * when the daemon exits or dies, so a claim is never stale and never has to
 * be taken over (reading and removing a dead daemon's claim file let a
 * rival's fresh claim be removed in between). The file holds the holder's
 * pid, for the message. Throws ChainfsError (busy) when another process
 * holds it.
 */
export function claimMountPoint(mountPoint: string): () => void {
  const { native } = require('../native') as typeof import('../native'); // the addon: only a mounting daemon needs it here
  // No longer than the record's name (.json): a mount point whose record fits
  // must not be refused for its claim's name (ENAMETOOLONG).
  const file = path.join(runDir(), `${encodeURIComponent(mountPoint)}.lock`);
  fs.mkdirSync(runDir(), { recursive: true, mode: 0o700 });
  for (;;) {
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    let held = false;
    try {
      if (!native.tryLock(fd)) {
        // The pid may not be written yet, or be a dead daemon's the holder has not overwritten yet.
        const holder = readClaim(fd);
        const shown = holder !== undefined && isAlive(holder) ? holder : undefined;
        throw new ChainfsError(mountPoint, `mount point is busy: another chainfs mount${shown ? ` (pid ${shown})` : ''} is being set up there`);
      }
      // The holder before us may have removed the file after we opened it:
      // a lock on a file no longer at that path claims nothing.
      const current = fs.statSync(file, { throwIfNoEntry: false });
      if (!current || current.ino !== fs.fstatSync(fd).ino) continue;
      fs.ftruncateSync(fd, 0);
      fs.writeSync(fd, String(process.pid), 0);
      held = true;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        fs.rmSync(file, { force: true }); // removed while still locked: a rival that opened it sees it gone and retries
        fs.closeSync(fd);
      };
    } finally {
      if (!held) fs.closeSync(fd);
    }
  }
}

/** The pid written in a claim file, or undefined. */
function readClaim(fd: number): number | undefined {
  const buf = Buffer.alloc(32);
  const n = fs.readSync(fd, buf, 0, buf.length, 0);
  const pid = Number(buf.subarray(0, n).toString('utf8'));
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

export function readRecord(mountPoint: string): DaemonRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(recordPath(mountPoint), 'utf8')) as DaemonRecord;
  } catch {
    return undefined;
  }
}

export function removeRecord(mountPoint: string, pid: number): void {
  const rec = readRecord(mountPoint);
  if (rec && rec.pid === pid) fs.rmSync(recordPath(mountPoint), { force: true });
}

/** A record found in the run directory, with the mount point it is named after. */
export interface ListedRecord extends DaemonRecord {
  mountPoint: string;
  /** The record file's mtime when `since` is absent. */
  since: string;
}

/** Every daemon record of this user's run directory (this host's chainfs mounts), by mount point. */
export function listRecords(): ListedRecord[] {
  let names: string[];
  try {
    names = fs.readdirSync(runDir());
  } catch {
    return [];
  }
  const out: ListedRecord[] = [];
  for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
    let mountPoint: string;
    try {
      mountPoint = decodeURIComponent(n.slice(0, -'.json'.length));
    } catch {
      continue;
    }
    const file = path.join(runDir(), n);
    try {
      const rec = JSON.parse(fs.readFileSync(file, 'utf8')) as DaemonRecord;
      if (typeof rec.pid !== 'number') continue;
      out.push({ ...rec, mountPoint, since: rec.since ?? fs.statSync(file).mtime.toISOString() });
    } catch {
      // a record being written or removed right now
    }
  }
  return out;
}

/** What keeps a mount busy: loop devices backed by its files, processes with files (or cwd) under it, mounts on it. */
export interface Holders {
  /** `/dev/loopN` and the file under the mount point it is backed by. */
  loops: Array<{ device: string; file: string }>;
  /** Processes and the first path under the mount point they hold: as their working directory, or an open file. */
  processes: Array<{ pid: number; command: string; path: string; how: 'cwd' | 'root' | 'open' }>;
  /** Mount points below it (e.g. fuse2fs mounts of its images). */
  submounts: string[];
}

/**
 * Finds the holders of `mountPoint` without touching the mount itself:
 * /sys/block/loop*\/loop/backing_file, the links of /proc/PID/{cwd,root,fd/*},
 * and /proc/self/mountinfo. Processes of other users are seen only by root.
 */
export function holders(mountPoint: string): Holders {
  const under = (p: string) => p === mountPoint || p.startsWith(`${mountPoint}/`);
  const loops: Holders['loops'] = [];
  for (const dev of safeReaddir('/sys/block').filter((d) => d.startsWith('loop'))) {
    const file = safeRead(`/sys/block/${dev}/loop/backing_file`)?.trim();
    if (file && under(file)) loops.push({ device: `/dev/${dev}`, file });
  }
  const processes: Holders['processes'] = [];
  for (const p of safeReaddir('/proc').filter((d) => /^\d+$/.test(d))) {
    const pid = Number(p);
    if (pid === process.pid) continue;
    const links = ['cwd', 'root', ...safeReaddir(`/proc/${p}/fd`).map((fd) => `fd/${fd}`)];
    for (const l of links) {
      const target = safeReadlink(`/proc/${p}/${l}`);
      if (target && under(target.replace(/ \(deleted\)$/, ''))) {
        const how = l === 'cwd' ? 'cwd' : l === 'root' ? 'root' : 'open';
        processes.push({ pid, command: safeRead(`/proc/${p}/comm`)?.trim() ?? '?', path: target, how });
        break;
      }
    }
  }
  const submounts = mountsBelow(mountPoint);
  return { loops, processes, submounts };
}

/** Mount points strictly below `mountPoint`, deepest first (the order to unmount them). */
export function mountsBelow(mountPoint: string): string[] {
  let text = '';
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const parts = line.split(' ');
    if (parts.length > 4) {
      const mp = unescape(parts[4]);
      if (mp.startsWith(`${mountPoint}/`)) out.add(mp);
    }
  }
  return [...out].sort((a, b) => b.length - a.length);
}

function safeReaddir(p: string): string[] {
  try {
    return fs.readdirSync(p);
  } catch {
    return [];
  }
}

function safeRead(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
}

function safeReadlink(p: string): string | undefined {
  try {
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}

export function defaultLogPath(mountPoint: string): string {
  return path.join(runDir(), `${encodeURIComponent(mountPoint)}.log`);
}

/** True while `pid` runs (a zombie no longer counts: nobody may reap it in a container). */
export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The CLI entry a daemon of this installation runs (`node .../dist/cli/main.js mount ...`). */
const MAIN_JS = path.join(__dirname, '..', 'cli', 'main.js');

/**
 * Is `pid` a chainfs daemon (and not a recycled pid)? Its command line
 * names chainfs, or this installation's main.js: a checkout in a directory
 * not called chainfs runs `node /src/tools/dist/cli/main.js mount ...`.
 */
export function isChainfsDaemon(pid: number): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('chainfs') || cmdline.split('\0').includes(MAIN_JS);
  } catch {
    return false;
  }
}
