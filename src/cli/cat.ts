/**
 * `chainfs cat DIR`: the flattened view on stdout, for pipes, ssh and dd.
 * Reads go straight into a small ring of buffers; a buffer is refilled only
 * once stdout has taken it, so memory stays at a few MiB.
 */
import { Command } from 'commander';
import { ChainfsError } from '../errors';
import { native } from '../native';
import { action, addReplicaOptions, openLayers, snapshotOption, type ReplicaOptions } from './common';

const CHUNK = 1 << 20;
const PIPE_SIZE = 1 << 20;
const RING = 4;

export function catCommand(): Command {
  return addReplicaOptions(new Command('cat'))
    .description('write the flattened view (raw image bytes) to stdout')
    .argument('<dir>', 'Longhorn replica directory')
    .addOption(snapshotOption())
    .action(action(async (dir: string, opts: ReplicaOptions & { snapshot?: string }) => {
      if (process.stdout.isTTY) {
        throw new ChainfsError(undefined, 'refusing to write a binary image to a terminal; redirect stdout (e.g. > volume.raw, | dd of=...)');
      }
      const layers = openLayers(dir, opts);
      native.setPipeSize(1, PIPE_SIZE); // fewer wakeups when stdout is a pipe; harmless otherwise
      try {
        await stream(layers.view(opts.snapshot).chain, process.stdout);
      } finally {
        layers.close();
      }
    }));
}

async function stream(chain: { size: number; read(b: Buffer, o: number, l: number, p: number): void },
  out: NodeJS.WriteStream): Promise<void> {
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
    chain.read(buf, 0, n, pos);
    out.write(n === CHUNK ? buf : buf.subarray(0, n), release(buf));
  }
  while (free.length < RING && !writeError) await new Promise<void>((r) => { waiter = r; });
  if (writeError) {
    const e = writeError as NodeJS.ErrnoException;
    if (e.code === 'EPIPE') process.exit(141); // the reader went away (| head): quiet, as with SIGPIPE
    throw new ChainfsError('stdout', `write failed: ${e.message}`);
  }
}
