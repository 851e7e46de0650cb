/**
 * What every kind of source (a replica directory, a node's data roots, a
 * backup target, a v2 disk) turns into: a Catalog of named views and a
 * report. The commands, the mount tree and the materializer only know this
 * interface; a format is known only below src/source/<kind>/ and src/layer/.
 *
 * Names are the same everywhere: a view's `path` is its path in the mount
 * tree (`snapshots/s1.img`, `volumes/pvc-1/replicas/pvc-1-1a2b3c4d/volume.img`,
 * `volumes/pvc-1/backups/backup-x.img`, `backing-images/bi.img`), and it is
 * what `inspect` prints and what the view-selecting options resolve to.
 *
 * Opening a source reads metadata only; a view opens its layers on first
 * use (`CatalogView.open`), so a node of 500 replicas or a bucket of 1,000
 * volumes is listed without touching data. Damage is local: a view that
 * cannot be opened carries its `problem` and is listed, not served; every
 * other view works.
 *
 * A source may also list lazily (only when asked, `SourceOptions.lazy`: the
 * mount): some directories are then named by `lazyDirectories()` and their
 * views are found by `expand(dir)` on first use, so that mounting a bucket
 * of 1,000 volumes reads the volume names only.
 */
import type { Chain, ChainOptions } from '../chain/chain';

/** What a view is, in the field's terms. */
export type ViewKind = 'head' | 'snapshot' | 'volume' | 'backup' | 'backing-image' | 'lvol';

/**
 * The options that pick one view of a source (`--volume`, `--replica`,
 * `--snapshot`, `--head`, `--backup`, `--backing-image`, `--lvol`). Each
 * source reads the ones that make sense for it and refuses the others with
 * a one-line error.
 */
export interface ViewSelector {
  /** A volume name (node, backup target, v2 disk). */
  volume?: string;
  /** A replica directory name (`pvc-1-1a2b3c4d`) or a v2 replica lvol name. */
  replica?: string;
  /** A snapshot: its name, its file name, `volume-snap-NAME`, or a unique prefix. */
  snapshot?: string;
  /** A head file that is not volume.meta's head (`volume-head-002.img`). */
  head?: string;
  /** A backup name (`backup-1a2b3c4d5e6f7a8b`). */
  backup?: string;
  /** A backing image by name. */
  backingImage?: string;
  /** Any lvol of a v2 disk by its SPDK name. */
  lvol?: string;
}

/** Options every source may read; each ignores what it has no use for. */
export interface SourceOptions {
  /** A backing image file to use instead of the one the metadata names. */
  backingFile?: string;
  /** Read what is refused by default (a Rebuilding replica, a live head, a block device in use). */
  force?: boolean;
  /** Recover a corrupt (NUL-filled, cut short) volume.meta in memory, as for a missing one. */
  recoverVolumeMeta?: boolean;
  /** Backups: serve the blocks over zeros (Longhorn's restore-to-file), not over the backing image. */
  noBacking?: boolean;
  /** Backups: what a bad block reads as: an error (default) or zeros (reported). */
  badBlocks?: 'fail' | 'zero';
  /** Backups: a directory for the on-disk block cache. */
  cacheDir?: string;
  /** Memory budget in MiB (resolved runs; decompressed backup blocks). */
  cacheMb?: number;
  /** Backups: parallel block fetches. */
  jobs?: number;
  /**
   * Only this volume matters (`--volume`): a source may read less (a backup
   * target lists this volume's backups, not the whole bucket's). Views are
   * still picked by `select`.
   */
  volume?: string;
  /** What --backup and --backing-image name: a backup URL that selects another one is refused. */
  backup?: string;
  backingImage?: string;
  /**
   * The caller (the mount) can list directories on first use: a source may
   * leave some unlisted (`Catalog.lazyDirectories`, `Catalog.expand`).
   * Commands that need every view (inspect, verify, select) leave it off.
   */
  lazy?: boolean;
}

/** A view, opened: its chain of layers and what the safety checks need. */
export interface OpenedView {
  /** The flat image. Its layers may be remote (`Layer.asyncOnly`): read it with `readAsync` then. */
  readonly chain: Chain;
  /**
   * Local files and directories the view reads (layer files, the backing
   * image, the source's root): an export refuses to write inside them, and
   * stamps the files to see that they did not change meanwhile.
   */
  readonly files: string[];
  /** Directories an output must not be written into (the replica directory, a target directory). */
  readonly roots: string[];
  /** Warnings about this view (a removed snapshot, a backing image past the volume's end). */
  readonly warnings: string[];
  /**
   * For the view of a head that a running engine may be writing: throws a
   * ChainfsError naming the writer unless `force`, else warns. Absent where
   * nothing can be live.
   */
  checkNotLive?(force: boolean, warn: (message: string) => void): void;
  /** Closes the view's own resources (shared layer files stay with the catalog). */
  close(): void;
}

/** One view of a catalog, not yet opened. */
export interface CatalogView {
  /** Path in the mount tree, '/'-separated, no leading slash. */
  readonly path: string;
  readonly kind: ViewKind;
  /** Short name for messages and derived file names (`pvc-1`, `pvc-1-before-upgrade`). */
  readonly name: string;
  /** Size in bytes, from metadata. */
  readonly size: number;
  /** Allocated bytes, an upper bound from metadata (st_blocks of the mount). */
  readonly allocatedBytes: number;
  readonly mtime: Date;
  readonly ctime: Date;
  /** Permission bits of the data it comes from (0o444 when unknown), for `--allow-other`. */
  readonly mode: number;
  /** Why the view cannot be opened; listed (inspect, catalog.json), not served. */
  readonly problem?: string;
  /** Opens the layers. Throws ChainfsError (one line naming the file) when it cannot. */
  open(opts: ChainOptions): Promise<OpenedView>;
}

/** A small generated file of the mount (`chain.json`, `catalog.json`). */
export interface CatalogFile {
  readonly path: string;
  /** Built on first use: a large report need not delay a mount. */
  content(): Buffer;
  /**
   * Work to do (and wait for) before `content()` can be built, when there is
   * some: a lazy source lists every lazy directory first, so that the file is
   * complete. The mount then shows the file with size 0 until it is opened.
   * Throws ChainfsError when the listing fails (asked again next time).
   */
  prepare?(): Promise<void>;
}

/** A source, opened: its views, its report, the view-selecting options. */
export interface Catalog {
  /** `replica`, `node`, `backupstore`, `spdk`. */
  readonly kind: string;
  /** The source as the user named it (for the mount's fsname and messages). */
  readonly label: string;
  /** Warnings about the source as a whole (printed once by every command). */
  readonly warnings: string[];
  /** Every view, usable or not (see `problem`). */
  views(): CatalogView[];
  /** The view at a mount-tree path, or undefined. */
  view(path: string): CatalogView | undefined;
  /** Generated files of the mount. */
  files(): CatalogFile[];
  /** Directories the mount shows even when empty (a replica's `snapshots/`). */
  directories?(): string[];
  /**
   * Directories whose views are not listed yet (mount-tree paths, e.g.
   * `volumes/pvc-1/backups`): the mount shows them, empty until `expand`.
   * Only a source opened with `lazy` has any; `views()` holds none of their
   * views until they are expanded.
   */
  lazyDirectories?(): string[];
  /**
   * Lists a lazy directory: every view below it, usable or not (see
   * `problem`), which `views()`, `view()` and the report include from then
   * on. Concurrent calls for one directory share one listing; a directory
   * listed already answers from memory. Throws ChainfsError (one line naming
   * the object) when the listing fails; the next call tries again.
   */
  expand?(dir: string): Promise<CatalogView[]>;
  /**
   * Warnings about processes using the source now (an engine with a replica's
   * files open for writing); asked by mount, which serves anyway and watches.
   */
  inUse?(): string[];
  /**
   * Every volume the source holds, served or not (a volume none of whose
   * replicas is usable has no view): what `--volume` may name.
   */
  volumeNames?(): string[];
  /** What `inspect --json` prints. */
  report(): object;
  /** What `inspect` prints (text, ends with a newline). */
  render(): string;
  /**
   * The one view the options pick (the head, or the picked replica, when
   * none is given). Throws ChainfsError naming the choices when the options
   * match nothing, or more than one view.
   */
  select(sel: ViewSelector): CatalogView;
  close(): void;
}

/** A kind of source: how to recognise it and open it. */
export interface SourceKind {
  readonly kind: string;
  /** Whether `arg` (a path or URL) is this kind of source; cheap (a stat, a magic number). */
  detect(arg: string): boolean;
  /** Opens one or more sources of this kind as one catalog. Throws ChainfsError. */
  open(args: string[], opts: SourceOptions): Promise<Catalog>;
}
