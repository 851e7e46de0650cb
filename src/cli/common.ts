/**
 * What every command shares: the source options, opening a source and a
 * view, warnings said once per run, and turning failures into one line on
 * stderr (plus, under --json, the error document on stdout) with an exit
 * code.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { ChainfsError, UsageError, fsError, oneLine } from '../errors';
import type { Catalog, CatalogView, OpenedView, ViewSelector } from '../source/catalog';
import { errorCode, errorDocument, jsonRequested } from './json';
import { compareText, nameList } from '../text';
import { mibToBytes } from '../units';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export const snapshotOption = () =>
  new Option('-s, --snapshot <name>', 'a snapshot instead of the head: its name, file name (with or without .img), volume-snap-NAME, or a unique prefix');

/** Every warning printed in this run, in order (a command's --json lists them). */
export const warningsSeen: string[] = [];

/**
 * `chainfs: warning: MSG` on stderr, once per run: the same warning
 * reached through the source, the view and the export is said once.
 */
export function warn(msg: string): void {
  const line = oneLine(msg);
  if (warningsSeen.includes(line)) return;
  warningsSeen.push(line);
  process.stderr.write(`chainfs: warning: ${line}\n`);
}

/**
 * One line, no stack: for errors the user can act on (exit 1; bugs exit
 * 70). With --json the failure is also `{"error": {code, message}}` on
 * stdout (src/cli/json.ts), so a script can tell why.
 */
export function fail(err: unknown): never {
  const e = err as NodeJS.ErrnoException;
  // An OS error we did not wrap (e.g. writing the output) is still one line.
  const known = err instanceof ChainfsError || (e && typeof e.code === 'string' && !!e.syscall);
  if (!known) {
    if (jsonRequested()) process.stdout.write(errorDocument('internal', oneLine((err as Error)?.message ?? String(err))));
    process.stderr.write(`chainfs: internal error (a bug; please report it): ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(70);
  }
  const message = oneLine(e.message) + rootHint(e);
  if (jsonRequested()) process.stdout.write(errorDocument(errorCode(err), message));
  process.stderr.write(`chainfs: ${message}\n`);
  process.exit(err instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE);
}

/** How a failed write to stdout exits: 1, or 2 where 1 means "different" or "damaged". */
let stdoutTroubleExit = EXIT_FAILURE;

/** compare, diff and verify: a lost report is trouble (exit 2), as their other failures. */
export function stdoutFailureExits(code: number): void {
  stdoutTroubleExit = code;
}

/**
 * stdout could not take what was written (a file on a full disk): the
 * output is lost, so one line on stderr and the command's trouble exit; a
 * reader that went away (`| head`) exits 141 quietly, as SIGPIPE would.
 */
export function stdoutFailed(err: unknown): never {
  if ((err as NodeJS.ErrnoException)?.code === 'EPIPE') process.exit(141);
  process.stderr.write(`chainfs: ${fsError('stdout', err, 'write failed').message}\n`);
  process.exit(stdoutTroubleExit);
}

/**
 * Exits with `code` once stdout has taken everything written to it; a
 * write that failed exits as stdoutFailed says (a report that ends in
 * process.exit would otherwise lose the failure, and exit 0 or 1).
 */
export function exitAfterStdout(code: number): void {
  process.stdout.write('', (err) => {
    const failed = process.stdout.errored ?? err;
    if (failed) stdoutFailed(failed);
    process.exit(code);
  });
}

/** A usage error: one line, exit 2 (and the JSON error document under --json). */
export function usageFail(message: string): never {
  if (jsonRequested()) process.stdout.write(errorDocument('usage', message));
  process.stderr.write(`chainfs: ${message}\n`);
  process.exit(EXIT_USAGE);
}

/**
 * What to do about a permission error on a source as a non-root user:
 * Longhorn's data (replica files, disks, backing images) belongs to root.
 * /dev/fuse and outputs have their own advice.
 */
function rootHint(e: NodeJS.ErrnoException): string {
  if (process.getuid?.() === 0) return '';
  const denied = e.code === 'EACCES' || e.code === 'EPERM' || /permission denied/i.test(e.message);
  if (!denied || /\/dev\/fuse|fusermount|write|output|mount point/i.test(e.message)) return '';
  return ' (Longhorn\'s data belongs to root: run chainfs as root, e.g. with sudo)';
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
export interface SourceCliOptions extends ViewSelector {
  backingFile?: string;
  force?: boolean;
  recoverVolumeMeta?: boolean;
  /** commander's spelling of --no-backing: false when given (export's --backing BASE shares the key: a string). */
  backing?: boolean | string;
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
    .option('--jobs <n>', 'backups: parallel block fetches', jobsValue)
    .option('--volume <name>', 'the volume (data roots, backup targets, v2 disks); a backup target lists only its backups');
  if (select) {
    cmd
      .option('--replica <dir>', "a replica of the volume by directory name (default: the one Longhorn would pick)")
      .addOption(snapshotOption())
      .option('--head <file>', "a head file that is not volume.meta's head (e.g. volume-head-002.img)")
      .option('--backup <name>', 'a backup of the volume (backup targets)')
      .option('--backing-image <name>', 'a backing image by name')
      .option('--lvol <name>', 'any lvol of a v2 disk by its SPDK name');
  }
  return cmd;
}

/**
 * The most parallel block fetches --jobs takes. Read-ahead starts the next
 * --jobs blocks at once and S3 opens as many sockets: an unbounded number
 * would fetch a whole backup in parallel on the first sequential read.
 */
export const MAX_JOBS = 256;

/** A --jobs value; otherwise a usage error (exit 2, one line, like commander's own). */
export function jobsValue(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > MAX_JOBS) throw new InvalidArgumentError(`a whole number from 1 to ${MAX_JOBS}, not ${JSON.stringify(v)}`);
  return n;
}

/** The source options of parsed command options. */
export function sourceOptions(o: SourceCliOptions & { cacheMb?: number }): import('../source/catalog').SourceOptions {
  return {
    backingFile: o.backingFile, force: o.force, recoverVolumeMeta: o.recoverVolumeMeta,
    noBacking: o.backing === false, badBlocks: o.badBlocks, cacheDir: o.cacheDir, jobs: o.jobs, cacheMb: o.cacheMb,
    volume: o.volume, backup: o.backup, backingImage: o.backingImage,
  };
}

/** The view selector of parsed command options. */
export function viewSelector(o: SourceCliOptions): ViewSelector {
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

/**
 * `inspect` and `mount` with --volume: a backup target lists that volume
 * only (its catalog does); data roots and v2 disks show every volume, but a
 * name none of them holds is refused (ChainfsError listing the volumes),
 * and a replica directory has no volumes (UsageError): either way a typo
 * would otherwise pass unseen.
 */
export function checkVolumeOption(catalog: Catalog, volume: string | undefined): void {
  if (volume === undefined || catalog.kind === 'backupstore') return;
  // A replica directory refuses --volume itself, as for map and cat (UsageError).
  if (catalog.kind === 'replica') catalog.select({ volume });
  // every volume, served or not: one whose replicas are all unusable has no view, but inspect reports it
  const names = [...(catalog.volumeNames?.() ?? [])].sort(compareText);
  if (names.includes(volume)) return;
  const held = names.length === 0 ? 'none' : nameList(names);
  throw new ChainfsError(catalog.label, `no volume named ${volume} (${catalog.kind === 'node' ? 'the data roots' : 'the v2 disks'} hold: ${held})`);
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
    const view = await entry.open({ cacheBytes: o.cacheMb ? mibToBytes(o.cacheMb) : undefined });
    for (const w of view.warnings) if (!catalog.warnings.includes(w)) warn(w);
    return { catalog, entry, view, close: () => { view.close(); catalog.close(); } };
  } catch (e) {
    catalog.close();
    throw e;
  }
}
