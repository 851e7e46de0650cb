/**
 * A view's bytes onto a stream (stdout for `cat` and `export SRC -`).
 * Reads go straight into a small ring of buffers; a buffer is refilled only
 * once the stream has taken it, so memory stays at a few MiB whatever the
 * view's size. A reader that goes away (`| head`) ends the process quietly
 * with 141, as SIGPIPE would.
 */
import { ChainfsError } from '../errors';
import type { Chain } from '../chain/chain';
import { native } from '../native';
import type { Progress } from '../materialize/progress';

const CHUNK = 1 << 20;
const PIPE_SIZE = 1 << 20;
const RING = 4;

/** Refuses a terminal on stdout: a binary image there is never what was meant. */
export function checkStdoutNotTerminal(): void {
  if (process.stdout.isTTY) {
    throw new ChainfsError(undefined, 'refusing to write a binary image to a terminal; redirect stdout (e.g. > volume.raw, | dd of=...)');
  }
}

/**
 * Writes every byte of `chain` to `out` (stdout), reporting how far it got
 * to `progress` under `phase` (total: the view's size). Throws ChainfsError
 * when the stream fails.
 */
export async function streamView(chain: Chain, out: NodeJS.WriteStream, progress?: Progress, phase: 'export' | 'cat' = 'cat'): Promise<void> {
  if (out === process.stdout) native.setPipeSize(1, PIPE_SIZE); // fewer wakeups when stdout is a pipe; harmless otherwise
  // Remote layers (backup blocks) are read asynchronously; they read ahead themselves.
  const remote = chain.layers.some((l) => l.asyncOnly);
  const free: Buffer[] = Array.from({ length: RING }, () => Buffer.allocUnsafe(CHUNK));
  let waiter: (() => void) | null = null;
  let writeError: Error | null = null;
  let lastReport = 0;
  const release = (buf: Buffer) => (err?: Error | null) => {
    if (err && !writeError) writeError = err;
    free.push(buf);
    const w = waiter;
    waiter = null;
    w?.();
  };
  out.on('error', (err) => { writeError = err; waiter?.(); });
  progress?.update({ phase, done: 0, total: chain.size });
  for (let pos = 0; pos < chain.size; pos += CHUNK) {
    while (free.length === 0 && !writeError) await new Promise<void>((r) => { waiter = r; });
    if (writeError) break;
    const buf = free.pop()!;
    const n = Math.min(CHUNK, chain.size - pos);
    if (remote) await chain.readAsync(buf, 0, n, pos);
    else chain.read(buf, 0, n, pos);
    out.write(n === CHUNK ? buf : buf.subarray(0, n), release(buf));
    const now = Date.now();
    if (progress && (now - lastReport >= 100 || pos + n === chain.size)) {
      lastReport = now;
      progress.update({ phase, done: pos + n, total: chain.size });
    }
  }
  while (free.length < RING && !writeError) await new Promise<void>((r) => { waiter = r; });
  progress?.stop();
  if (writeError) {
    const e = writeError as NodeJS.ErrnoException;
    if (e.code === 'EPIPE') process.exit(141); // the reader went away (| head): quiet, as with SIGPIPE
    throw new ChainfsError('stdout', `write failed: ${e.message}`);
  }
}
