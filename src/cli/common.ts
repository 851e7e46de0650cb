/**
 * What every command shares: the replica options, opening a replica, and
 * turning failures into one line on stderr with an exit code.
 */
import { Command, Option } from 'commander';
import { ChainfsError, oneLine } from '../errors';
import type { Catalog, CatalogView, OpenedView } from '../source/catalog';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export const snapshotOption = () =>
  new Option('-s, --snapshot <name>', 'a snapshot view instead of the head (NAME or volume-snap-NAME.img)');

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

/** Every option that picks a view or tunes a source, as the commands parse them. */
export interface SourceCliOptions {
  backingFile?: string;
  force?: boolean;
  recoverVolumeMeta?: boolean;
  volume?: string;
  replica?: string;
  snapshot?: string;
  head?: string;
  backup?: string;
  backingImage?: string;
  lvol?: string;
  /** commander's spelling of --no-backing: false when given. */
  backing?: boolean;
  badBlocks?: 'fail' | 'zero';
  cacheDir?: string;
  jobs?: number;
}

/**
 * The options of every command that reads a source (a replica directory,
 * data roots, a backup target, a v2 disk). `select` adds the view-selecting
 * ones (not for inspect and mount, which show every view).
 */
export function addSourceOptions(cmd: Command, select: boolean): Command {
  cmd
    .option('--backing-file <path>', 'use this backing image instead of the one the metadata names')
    .option('--force', 'read what is refused by default (a Rebuilding replica, a live head, a device in use)')
    .option('--recover-volume-meta', 'recover a corrupt volume.meta in memory, as the engine does for a missing one')
    .option('--no-backing', 'backups: the blocks over zeros, as Longhorn restores to a file (no backing image)')
    .addOption(new Option('--bad-blocks <mode>', 'backups: what a bad block reads as').choices(['fail', 'zero']))
    .option('--cache-dir <dir>', 'backups: keep downloaded blocks in this directory (checksummed on reuse)')
    .option('--jobs <n>', 'backups: parallel block fetches', (v) => positiveInt('--jobs', v));
  if (select) {
    cmd
      .option('--volume <name>', 'the volume (data roots, backup targets, v2 disks)')
      .option('--replica <dir>', "a replica of the volume by directory name (default: the one Longhorn would pick)")
      .addOption(snapshotOption())
      .option('--head <file>', "a head file that is not volume.meta's head (e.g. volume-head-002.img)")
      .option('--backup <name>', 'a backup of the volume (backup targets)')
      .option('--backing-image <name>', 'a backing image by name')
      .option('--lvol <name>', 'any lvol of a v2 disk by its SPDK name');
  }
  return cmd;
}

function positiveInt(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new ChainfsError(undefined, `${flag} takes a whole number from 1 up, not ${JSON.stringify(v)}`);
  return n;
}

/** The source options of parsed command options. */
export function sourceOptions(o: SourceCliOptions & { cacheMb?: number }): import('../source/catalog').SourceOptions {
  return {
    backingFile: o.backingFile, force: o.force, recoverVolumeMeta: o.recoverVolumeMeta,
    noBacking: o.backing === false, badBlocks: o.badBlocks, cacheDir: o.cacheDir, jobs: o.jobs, cacheMb: o.cacheMb,
  };
}

/** The view selector of parsed command options. */
export function viewSelector(o: SourceCliOptions): import('../source/catalog').ViewSelector {
  return {
    volume: o.volume, replica: o.replica, snapshot: o.snapshot, head: o.head, backup: o.backup,
    backingImage: o.backingImage, lvol: o.lvol,
  };
}

/** Opens the sources as one catalog; prints its warnings to stderr unless quiet. */
export async function openCatalog(args: string[], o: SourceCliOptions & { cacheMb?: number },
  quietWarnings = false): Promise<Catalog> {
  const { openSource } = require('../source/open') as typeof import('../source/open');
  const catalog = await openSource(args, sourceOptions(o));
  if (!quietWarnings) for (const w of catalog.warnings) warn(w);
  return catalog;
}

/** A selected, opened view and the catalog it came from (close both). */
export interface SelectedView {
  catalog: Catalog;
  entry: CatalogView;
  view: OpenedView;
  close(): void;
}

/**
 * Opens the sources, selects the view the options name and opens it;
 * prints the source's and the view's warnings to stderr (each once).
 */
export async function openSelectedView(args: string[], o: SourceCliOptions & { cacheMb?: number }): Promise<SelectedView> {
  const catalog = await openCatalog(args, o);
  try {
    const entry = catalog.select(viewSelector(o));
    const view = await entry.open({ cacheBytes: o.cacheMb ? o.cacheMb << 20 : undefined });
    for (const w of view.warnings) if (!catalog.warnings.includes(w)) warn(w);
    return { catalog, entry, view, close: () => { view.close(); catalog.close(); } };
  } catch (e) {
    catalog.close();
    throw e;
  }
}
