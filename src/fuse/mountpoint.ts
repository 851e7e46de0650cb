/**
 * Mount points and the daemons behind them: /proc/self/mountinfo, the
 * pid file each daemon leaves in the run directory, stale mounts (a daemon
 * that died leaves "Transport endpoint is not connected"), fusermount.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface MountEntry {
  /** The mount's id in mountinfo: a new mount at the same place gets a new one. */
  id: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

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

export interface DaemonRecord {
  pid: number;
  replica: string;
  log: string;
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

/** Is `pid` a chainfs daemon (and not a recycled pid)? */
export function isChainfsDaemon(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('chainfs');
  } catch {
    return false;
  }
}
