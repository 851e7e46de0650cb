/**
 * `chainfs cat DIR`: the flattened view on stdout, for pipes, ssh and dd.
 * Reads go straight into a small ring of buffers; a buffer is refilled only
 * once stdout has taken it, so memory stays at a few MiB.
 */
import { Command } from 'commander';
import { ChainfsError } from '../errors';
import { native } from '../native';
import type { Chain } from '../chain/chain';
import { action, addSourceOptions, openSelectedView, type SourceCliOptions } from './common';

const CHUNK = 1 << 20;
const PIPE_SIZE = 1 << 20;
const RING = 4;

export function catCommand(): Command {
  return addSourceOptions(new Command('cat'), true)
    .description('write the flattened view (raw image bytes) to stdout')
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks')
    .action(action(async (sources: string[], opts: SourceCliOptions) => {
      if (process.stdout.isTTY) {
        throw new ChainfsError(undefined, 'refusing to write a binary image to a terminal; redirect stdout (e.g. > volume.raw, | dd of=...)');
      }
      const selected = await openSelectedView(sources, opts);
      native.setPipeSize(1, PIPE_SIZE); // fewer wakeups when stdout is a pipe; harmless otherwise
      try {
        await stream(selected.view.chain, process.stdout);
      } finally {
        selected.close();
      }
    }));
}

async function stream(chain: Chain, out: NodeJS.WriteStream): Promise<void> {
  // Remote layers (backup blocks) are read asynchronously; they read ahead themselves.
  const remote = chain.layers.some((l) => l.asyncOnly);
  const free: Buffer[] = Array.from({ length: RING }, () => Buffer.allocUnsafe(CHUNK));
  let waiter: (() => void) | null = null;
  let writeError: Error | null = null;
  const release = (buf: Buffer) => (err?: Error | null) => {
    if (err && !writeError) writeError = err;
    free.push(buf);
    const w = waiter;
    waiter = null;
    w?.();
  };
  out.on('error', (err) => { writeError = err; waiter?.(); });
  for (let pos = 0; pos < chain.size; pos += CHUNK) {
    while (free.length === 0 && !writeError) await new Promise<void>((r) => { waiter = r; });
    if (writeError) break;
    const buf = free.pop()!;
    const n = Math.min(CHUNK, chain.size - pos);
    if (remote) await chain.readAsync(buf, 0, n, pos);
    else chain.read(buf, 0, n, pos);
    out.write(n === CHUNK ? buf : buf.subarray(0, n), release(buf));
  }
  while (free.length < RING && !writeError) await new Promise<void>((r) => { waiter = r; });
  if (writeError) {
    const e = writeError as NodeJS.ErrnoException;
    if (e.code === 'EPIPE') process.exit(141); // the reader went away (| head): quiet, as with SIGPIPE
    throw new ChainfsError('stdout', `write failed: ${e.message}`);
  }
}
