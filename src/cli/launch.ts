/**
 * Starting a background mount daemon and waiting for its verdict, when the
 * CLI itself must do it (e.g. --debug). The plain `chainfs mount DIR MP`
 * never gets here: bin/chainfs starts the daemon itself and reads the same
 * protocol, saving a Node start-up.
 *
 * The daemon checks everything itself (replica, backing image, mount point)
 * and reports on fd 3, one line each: `warn TEXT`, then `ok`, `error TEXT`
 * or `usage TEXT` (its arguments were refused).
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';

export interface Verdict {
  ok: boolean;
  /** The daemon refused its arguments (exit 2, like any usage error). */
  usage?: boolean;
  /** The daemon's one-line error, or what happened to it. */
  message: string;
}

/**
 * Runs `chainfs ARGS --ready-fd 3` detached, with stdout/stderr on
 * `output`; warnings go to `onWarning`. Resolves when the mount is readable
 * (the daemon keeps running) or the daemon gave up.
 */
export function startDaemon(args: string[], output: number | 'ignore', onWarning: (w: string) => void): Promise<Verdict> {
  // The CLI's own entry (bin/chainfs is a bash launcher: Node cannot run it).
  const main = path.join(__dirname, 'main.js');
  const child = spawn(process.execPath, [main, ...args, '--ready-fd', '3'], {
    detached: true, stdio: ['ignore', output, output, 'pipe'],
  });
  const pipe = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
  let pending = '';
  return new Promise<Verdict>((resolve) => {
    // Silent for 30 s but alive: still opening the source (a slow disk or share, a
    // dirty v2 disk's metadata scan). Waiting is right (Ctrl-C stops it); say so once.
    const timer = setTimeout(() => {
      process.stderr.write(`chainfs: still opening the source after 30 s (daemon ${child.pid}); waiting for it, Ctrl-C gives up\n`);
    }, 30_000);
    // Ctrl-C while the daemon is still opening the source: it must not mount
    // later, unseen (on SIGTERM it exits, and unmounts if it got that far).
    const interrupted = () => {
      child.kill('SIGTERM');
      process.stderr.write('chainfs: interrupted; nothing was mounted\n');
      process.exit(130);
    };
    const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    for (const s of SIGNALS) process.on(s, interrupted);
    let settled = false;
    const done = (v: Verdict) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      for (const s of SIGNALS) process.off(s, interrupted);
      if (v.ok) {
        child.unref();
        pipe.destroy();
      }
      resolve(v);
    };
    pipe.on('data', (d: Buffer) => {
      pending += d.toString();
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const sp = line.indexOf(' ');
        const kind = sp < 0 ? line : line.slice(0, sp);
        const text = sp < 0 ? '' : line.slice(sp + 1);
        if (kind === 'warn') onWarning(text);
        else if (kind === 'ok') done({ ok: true, message: '' });
        else if (kind === 'usage') done({ ok: false, usage: true, message: text });
        else done({ ok: false, message: text });
      }
    });
    child.on('exit', (code, signal) => done({ ok: false, message: `the daemon exited (${signal ?? `status ${code}`})` }));
  });
}
