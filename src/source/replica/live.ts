/**
 * Is a replica in use? The engine keeps the head (and revision.counter) open
 * read-write while the volume is attached, so a process holding a file of the
 * replica directory open for writing is the best offline sign of a live
 * replica. Found by scanning /proc: every process's fd links, and for links
 * that point into the directory the open flags in /proc/PID/fdinfo/FD.
 *
 * Cost: one readdir per process and one readlink per open fd on the machine
 * (a few ms on a quiet host, tens of ms on a busy one); processes we may not
 * inspect (other users' without CAP_SYS_PTRACE) are skipped silently, so the
 * answer is "writers we can see".
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Writer {
  pid: number;
  /** The process's command name (/proc/PID/comm). */
  command: string;
  /** The open file's path, as the kernel reports it. */
  file: string;
}

const O_ACCMODE = 0o3;
const O_WRONLY = 0o1;
const O_RDWR = 0o2;

/** Processes that have a file under `dir` open for writing (O_WRONLY or O_RDWR). */
export function findWriters(dir: string, proc = '/proc'): Writer[] {
  const root = realpathOr(dir);
  const prefix = root.endsWith('/') ? root : `${root}/`;
  const out: Writer[] = [];
  let pids: string[];
  try {
    pids = fs.readdirSync(proc);
  } catch {
    return out; // no /proc: nothing we can tell
  }
  for (const p of pids) {
    if (!/^\d+$/.test(p)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(path.join(proc, p, 'fd'));
    } catch {
      continue; // gone, or not ours to look at
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = fs.readlinkSync(path.join(proc, p, 'fd', fd));
      } catch {
        continue;
      }
      if (!target.startsWith(prefix)) continue;
      const flags = openFlags(path.join(proc, p, 'fdinfo', fd));
      if (flags === undefined) continue;
      const mode = flags & O_ACCMODE;
      if (mode !== O_WRONLY && mode !== O_RDWR) continue;
      out.push({ pid: Number(p), command: command(proc, p), file: target });
    }
  }
  return out;
}

/** `flags:` of an fdinfo file (octal), or undefined if it cannot be read. */
function openFlags(fdinfo: string): number | undefined {
  try {
    const m = /^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(fdinfo, 'utf8'));
    return m ? parseInt(m[1], 8) : undefined;
  } catch {
    return undefined;
  }
}

function command(proc: string, pid: string): string {
  try {
    return fs.readFileSync(path.join(proc, pid, 'comm'), 'utf8').trim();
  } catch {
    return '?';
  }
}

function realpathOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}
