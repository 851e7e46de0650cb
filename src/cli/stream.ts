/**
 * A view's bytes onto a stream (stdout for `cat` and `export SRC -`).
 * On stdout, runs of plain layer files go with sendfile(2): the kernel hands
 * their page-cache pages to a pipe (or /dev/null, or copies them to a file)
 * without copying them through the process; holes are written from a zero
 * buffer and what only the layer can read (qcow2 compressed clusters)
 * through it, in large writes. Elsewhere, and for remote layers, reads go
 * straight into a small ring of buffers; a buffer is refilled only once the
 * stream has taken it. Either way memory stays at a few MiB whatever the
 * view's size. A reader that goes away (`| head`) ends the process quietly
 * with 141, as SIGPIPE would.
 */
import { ChainfsError, fsError } from '../errors';
import { REGION_SIZE, type Chain } from '../chain/chain';
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
  if (out === process.stdout && !remote) {
    try {
      await sendView(chain, 1, progress, phase);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EPIPE') process.exit(141); // the reader went away (| head)
      if ((e as NodeJS.ErrnoException).syscall === 'write') throw fsError('stdout', e, 'write failed');
      throw e;
    } finally {
      progress?.stop();
    }
    return;
  }
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
    throw fsError('stdout', e, 'write failed');
  }
}

/**
 * Writes every byte of `chain` to `fd`: plain file runs with sendfile
 * (page-cache pages, no copy through the process), holes from a zero
 * buffer, the rest read into a buffer; the syscalls block, and the event
 * loop gets a turn after each region (a progress bar redraws on a timer).
 * Throws the chain's own error for a layer that cannot be read, and errno
 * errors (`code`, `syscall`) for fd.
 */
async function sendView(chain: Chain, fd: number, progress: Progress | undefined, phase: 'export' | 'cat'): Promise<void> {
  const zeros = Buffer.alloc(CHUNK);
  const buf = Buffer.allocUnsafe(CHUNK);
  let sendfile = true; // false once fd refuses it (an O_APPEND file): large writes instead
  const writeZeros = (n: number) => {
    for (; n > 0; n -= Math.min(n, CHUNK)) native.writeAll(fd, zeros, 0, Math.min(n, CHUNK));
  };
  const copy = (offset: number, length: number) => {
    for (let p = offset; p < offset + length; p += CHUNK) {
      const n = Math.min(CHUNK, offset + length - p);
      chain.read(buf, 0, n, p);
      native.writeAll(fd, buf, 0, n);
    }
  };
  // One piece of a layer file: [from, from+inFile) of `file`, then zeros to `length`.
  const send = (offset: number, length: number, file: number, delta: number, fileEnd: number) => {
    if (file < 0 || !sendfile) return copy(offset, length);
    const from = offset + delta;
    const inFile = Math.max(0, Math.min(length, fileEnd - from));
    let sent = 0;
    try {
      sent = inFile > 0 ? native.sendFile(fd, file, from, inFile) : 0;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EINVAL' && sent === 0 && err.syscall === 'sendfile') {
        sendfile = false; // nothing was written: the output takes writes only
        return copy(offset, length);
      }
      if (err.code === 'EPIPE' || err.syscall !== 'sendfile') throw e;
      sent = -1;
    }
    if (sent !== inFile) {
      // The layer failed under sendfile (or shrank): its own read says why.
      chain.read(buf, 0, Math.min(CHUNK, length), offset);
      throw new ChainfsError(undefined, `a layer read failed at offset ${offset} of the view (sendfile: ${sent < 0 ? 'error' : 'short'})`);
    }
    writeZeros(length - inFile);
  };
  progress?.update({ phase, done: 0, total: chain.size });
  let lastReport = 0;
  for (let start = 0; start < chain.size; start += REGION_SIZE) {
    const end = Math.min(start + REGION_SIZE, chain.size);
    for (const r of chain.runs(start, end - start)) {
      if (r.layer === null) writeZeros(r.length);
      else if (!r.layer.mapDirect) copy(r.offset, r.length);
      else {
        const pieces: number[] = [];
        try {
          r.layer.mapDirect(r.offset, r.length, (o, l, f, d, e) => pieces.push(o, l, f, d, e));
        } catch {
          copy(r.offset, r.length); // a corrupt mapping: the read throws (and says) why
          continue;
        }
        for (let i = 0; i < pieces.length; i += 5) send(pieces[i], pieces[i + 1], pieces[i + 2], pieces[i + 3], pieces[i + 4]);
      }
    }
    const now = Date.now();
    if (progress && (now - lastReport >= 100 || end === chain.size)) {
      lastReport = now;
      progress.update({ phase, done: end, total: chain.size });
    }
    await new Promise<void>((resolve) => setImmediate(resolve)); // one turn per 4 MiB: about 1000 for 4 GiB
  }
}
