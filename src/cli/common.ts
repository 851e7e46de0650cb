/**
 * What every command shares: the replica options, opening a replica, and
 * turning failures into one line on stderr with an exit code.
 */
import { Command, Option } from 'commander';
import { ChainfsError, oneLine } from '../errors';
import type { LayerSet } from '../chain/view';

export interface ReplicaOptions {
  backingFile?: string;
  force?: boolean;
}

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export function addReplicaOptions(cmd: Command): Command {
  return cmd
    .option('--backing-file <path>', "use this backing image instead of the one volume.meta names")
    .option('--force', 'read a replica that is Rebuilding (its data may be incomplete)');
}

export const snapshotOption = () =>
  new Option('-s, --snapshot <name>', 'a snapshot view instead of the head (NAME or volume-snap-NAME.img)');

/** Opens the replica's metadata and its layer set; prints warnings to stderr. */
export function openLayers(dir: string, opts: ReplicaOptions, quietWarnings = false): LayerSet {
  // Loaded here, not at the top: every command's start (and a mount's two
  // processes) does not pay for modules that `--help` or umount never use.
  const { Replica } = require('../longhorn/replica') as typeof import('../longhorn/replica');
  const { LayerSet } = require('../chain/view') as typeof import('../chain/view');
  const replica = Replica.open(dir, { backingFile: opts.backingFile, force: opts.force });
  const layers = new LayerSet(replica);
  if (!quietWarnings) for (const w of replica.warnings) warn(w);
  return layers;
}

export function warn(msg: string): void {
  process.stderr.write(`chainfs: warning: ${oneLine(msg)}\n`);
}

/** One line, no stack: for errors the user can act on. */
export function fail(err: unknown): never {
  if (err instanceof ChainfsError) {
    process.stderr.write(`chainfs: ${oneLine(err.message)}\n`);
    process.exit(EXIT_FAILURE);
  }
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string' && e.syscall) {
    // An OS error we did not wrap (e.g. writing the output): still one line.
    process.stderr.write(`chainfs: ${oneLine(e.message)}\n`);
    process.exit(EXIT_FAILURE);
  }
  process.stderr.write(`chainfs: internal error (a bug; please report it): ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(70);
}

/** Wraps a command action so that every failure goes through `fail`. */
export function action<A extends unknown[]>(fn: (...args: A) => void | Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      fail(e);
    }
  };
}
