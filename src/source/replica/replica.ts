/**
 * A replica directory, read-only: volume.meta, every disk's .meta, the chain
 * of any view (following Parent links, never file-name order), and where the
 * backing image is. Opening reads only metadata and stats files; no layer
 * data is touched.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, fsError, oneLine } from '../../errors';
import { compareText, didYouMean } from '../../text';
import { locateBacking, type BackingLocation } from './backing';
import { fileKind, readMetaFile } from './files';
import { parseDiskMeta, parseVolumeMeta, type DiskMeta, type VolumeMeta } from './meta';
import {
  MAX_CHAIN_LENGTH, META_SUFFIX, VOLUME_META, isDiskFile, isHeadFile, isSnapshotFile, snapshotFile, snapshotName,
} from './names';

export interface Disk {
  /** File name, e.g. `volume-snap-s1.img`: the disk's identity (never the .meta's Name). */
  file: string;
  path: string;
  kind: 'head' | 'snapshot';
  /** Snapshot name (`s1`), or the file name for a head. */
  name: string;
  /** Parsed .meta, or the reason it could not be parsed (only fatal if the disk is used). */
  meta: DiskMeta | ChainfsError;
  /** From lstat of the .img; undefined if it is missing or not a regular file (it may still be unreadable). */
  stat?: fs.Stats;
  /** Why the .img cannot be used, if it cannot. */
  imgProblem?: string;
}

export interface OpenOptions {
  /** Use this backing image instead of the one volume.meta names. */
  backingFile?: string;
  /** Accept a replica that is Rebuilding. */
  force?: boolean;
  /** Recover a corrupt volume.meta in memory, as the engine does for a missing one. */
  recoverVolumeMeta?: boolean;
  /** More data roots whose backing-images/ directories may hold the backing image. */
  backingRoots?: string[];
}

/** A layer file with no .meta: in no chain (the engine ignores it), listed for the operator. */
export interface Orphan {
  file: string;
  size: number;
  allocatedBytes: number;
}

export class Replica {
  readonly dir: string;
  readonly meta: VolumeMeta;
  /** volume.meta was missing or empty and was recovered in memory (never written). */
  readonly metaRecovered: boolean;
  readonly disks: Map<string, Disk>;
  readonly orphans: Orphan[];
  /** The backing image, or why it cannot be found (then every view fails with it). */
  readonly backing: BackingLocation | ChainfsError | null;
  /** Why no view may be read without --force (Rebuilding), if so. */
  readonly refused: string | undefined;
  readonly warnings: string[];
  private readonly chains = new Map<string, Disk[]>();

  private constructor(dir: string, meta: VolumeMeta, recovered: boolean, disks: Map<string, Disk>, orphans: Orphan[],
    backing: BackingLocation | ChainfsError | null, refused: string | undefined, warnings: string[]) {
    this.dir = dir;
    this.meta = meta;
    this.metaRecovered = recovered;
    this.disks = disks;
    this.orphans = orphans;
    this.backing = backing;
    this.refused = refused;
    this.warnings = warnings;
  }

  static open(dir: string, opts: OpenOptions = {}): Replica {
    const abs = path.resolve(dir);
    checkDirectory(abs);
    const warnings: string[] = [];
    const { disks, orphans } = scanDisks(abs);
    const { meta, recovered } = readVolumeMeta(abs, disks, warnings, opts.recoverVolumeMeta ?? false);
    const metaPath = path.join(abs, VOLUME_META);
    let refused: string | undefined;
    if (meta.rebuilding) {
      // Only metadata is safe to show without --force: the views refuse.
      // Without --force every view refuses with this (inspect shows the state): no warning to repeat it.
      if (!opts.force) refused = 'replica is Rebuilding (its data is incomplete); pass --force to read it anyway';
      else warnings.push(`${metaPath}: replica is Rebuilding: its data may be incomplete (--force)`);
    }
    if (meta.dirty) {
      warnings.push(`${metaPath}: Dirty is true: the replica was not closed cleanly, or is in use by an engine`);
    }
    if (meta.error) warnings.push(`${metaPath}: Error recorded: ${oneLine(meta.error, 300)}`);
    if (meta.encrypted) {
      warnings.push(`${metaPath}: volume is encrypted: views hold LUKS2 ciphertext (open them with cryptsetup)`);
    }
    let backing: BackingLocation | ChainfsError | null = null;
    if (opts.backingFile || meta.backingFilePath) {
      try {
        backing = locateBacking(abs, meta.backingFilePath, opts.backingFile, opts.backingRoots);
        if (opts.backingFile && path.dirname(backing.path) === fs.realpathSync(abs)) {
          // A layer of the replica itself under its own chain would read as nonsense.
          throw new ChainfsError(opts.backingFile, 'is a file of the replica directory itself, not a backing image (--backing-file)');
        }
        if (opts.backingFile && !meta.backingFilePath && !recovered) {
          warnings.push(`${metaPath}: names no backing image (BackingFilePath is empty); using --backing-file ${opts.backingFile} under the chain anyway`);
        }
      } catch (e) {
        if (!(e instanceof ChainfsError)) throw e;
        backing = e; // every view needs it: each fails with this, inspect still reports
      }
    }
    const r = new Replica(abs, meta, recovered, disks, orphans, backing, refused, warnings);
    // Orphans, other heads and a broken head's chain are in the report
    // (inspect, chain.json), not warnings: a command reading a view that
    // does not need them is not concerned, one that does fails with the reason.
    if (!r.chainProblem(meta.head)) {
      const head = r.chain(meta.head)[0];
      const headParent = (head.meta as DiskMeta).parent;
      if (!recovered && meta.parent !== headParent) {
        // The engine re-derives Parent from the head's .meta; so do we.
        warnings.push(`${metaPath}: Parent ${JSON.stringify(meta.parent)} differs from ${head.file}.meta's ${JSON.stringify(headParent)}; following the head's .meta, as the engine does`);
      }
      if (head.stat && head.stat.size !== meta.size) {
        warnings.push(`${head.path}: file size ${head.stat.size} differs from volume.meta Size ${meta.size}; the volume is ${meta.size} bytes`);
      }
    }
    return r;
  }

  /** Why the view rooted at `rootFile` cannot be read (a broken link, a missing file, Rebuilding), or undefined. */
  chainProblem(rootFile: string): string | undefined {
    if (this.refused) return `${path.join(this.dir, VOLUME_META)}: ${this.refused}`;
    try {
      this.chain(rootFile);
    } catch (e) {
      if (!(e instanceof ChainfsError)) throw e;
      return e.message;
    }
    if (this.backing instanceof ChainfsError) return this.backing.message;
    return undefined;
  }

  /** Head files other than volume.meta's head, each with its own .meta (copies, failed snapshots). */
  otherHeads(): Disk[] {
    return [...this.disks.values()].filter((d) => d.kind === 'head' && d.file !== this.meta.head);
  }

  /** Every snapshot disk, in the head's chain or not, oldest first by chain then name. */
  snapshots(): Disk[] {
    return [...this.disks.values()].filter((d) => d.kind === 'snapshot')
      .sort((a, b) => compareText(a.file, b.file));
  }

  /**
   * The snapshot `query` names: its name (`s1`), its file name with or
   * without `.img` (`volume-snap-s1.img`, `volume-snap-s1`), or a unique
   * prefix of its name (a UUID prefix is how people quote them). Throws a
   * ChainfsError naming the nearest names when nothing, or several, match.
   */
  findSnapshot(query: string): Disk {
    const snaps = this.snapshots();
    const exact = snaps.find((d) => d.name === query || d.file === query || d.file === `${query}.img` ||
      d.file === snapshotFile(query));
    if (exact) return exact;
    const byPrefix = snaps.filter((d) => d.name.startsWith(query) || d.file.startsWith(query));
    if (query !== '' && byPrefix.length === 1) return byPrefix[0];
    if (byPrefix.length > 1) {
      throw new ChainfsError(this.dir, `snapshot ${JSON.stringify(query)} is ambiguous: it starts ${byPrefix.length} names (${byPrefix.slice(0, 5).map((d) => d.name).join(', ')}${byPrefix.length > 5 ? ', ...' : ''}); give more of the name`);
    }
    throw new ChainfsError(this.dir, `no snapshot named ${JSON.stringify(query)}; ${didYouMean(query, snaps.map((d) => d.name), 'snapshots')}`);
  }

  /** A head file by name (`volume-head-002.img`, with or without `.img`). */
  findHead(query: string): Disk {
    const heads = [...this.disks.values()].filter((d) => d.kind === 'head');
    const d = heads.find((h) => h.file === query || h.file === `${query}.img`);
    if (d) return d;
    throw new ChainfsError(this.dir, `no head file named ${JSON.stringify(query)} with a .meta; ${didYouMean(query, heads.map((h) => h.file), 'heads')}`);
  }

  /**
   * The chain of the view rooted at `rootFile`: newest first, down to the
   * oldest disk. Memoized: with 250 snapshots, listing every view's chain
   * walks each Parent link once rather than 250 times.
   */
  chain(rootFile: string): Disk[] {
    const cached = this.chains.get(rootFile);
    if (cached) return cached;
    const walked: Disk[] = [];
    const seen = new Set<string>();
    let file = rootFile;
    let referrer = path.join(this.dir, VOLUME_META);
    let tail: Disk[] = [];
    while (file !== '') {
      const known = this.chains.get(file);
      if (known) {
        tail = known;
        break;
      }
      if (seen.has(file)) throw new ChainfsError(referrer, `Parent chain has a cycle at ${file}`);
      seen.add(file);
      const d = this.disk(file, referrer, walked.length === 0 ? 'view root' : 'Parent');
      walked.push(d);
      referrer = `${d.path}${META_SUFFIX}`;
      file = (d.meta as DiskMeta).parent;
    }
    // Every suffix of the walk is itself a chain: remember them all.
    for (let i = walked.length - 1; i >= 0; i--) {
      tail = [walked[i], ...tail];
      this.chains.set(walked[i].file, tail);
    }
    if (tail.length > MAX_CHAIN_LENGTH) {
      this.warnOnce(`${this.dir}: chain of ${rootFile} has ${tail.length} disks; the engine refuses more than ${MAX_CHAIN_LENGTH}`);
    }
    return tail;
  }

  /** A usable chain member: its .meta parsed and its .img a regular file. */
  private disk(file: string, referrer: string, role: string): Disk {
    const d = this.disks.get(file);
    if (!d) {
      const img = path.join(this.dir, file);
      const what = fs.existsSync(img) ? `${file}${META_SUFFIX} is missing` : `${file} and its .meta are missing`;
      throw new ChainfsError(referrer, `${role} ${file} is not usable: ${what}`);
    }
    if (d.meta instanceof ChainfsError) throw d.meta;
    if (d.imgProblem) throw new ChainfsError(d.path, d.imgProblem);
    return d;
  }

  private warnOnce(w: string): void {
    if (!this.warnings.includes(w)) this.warnings.push(w);
  }
}

function checkDirectory(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    throw fsError(dir, e, 'replica directory');
  }
  if (!st.isDirectory()) {
    const fileOrDevice = st.isFile() || st.isBlockDevice();
    // A disk image or device this user may not read (a v2 disk is root's): its kind cannot be told, say why.
    if (fileOrDevice) {
      try {
        fs.accessSync(dir, fs.constants.R_OK);
      } catch (e) {
        throw fsError(dir, e, 'cannot read it to tell what kind of source it is');
      }
    }
    // A file or device could have been a v2 disk: say why it is not read as one either.
    const v2 = fileOrDevice ? ' or a v2 disk (no SPDK blobstore signature "SPDKBLOB" at byte 0)' : '';
    throw new ChainfsError(dir, `not a directory (${fileKind(st)}); expected a Longhorn replica directory${v2}`);
  }
}

/** Every `<disk>.meta` except volume.meta is a disk, as in the engine's readMetadata. */
function scanDisks(dir: string): { disks: Map<string, Disk>; orphans: Orphan[] } {
  let names: string[];
  try {
    names = fs.readdirSync(dir).sort();
  } catch (e) {
    throw fsError(dir, e, 'cannot list replica directory');
  }
  const disks = new Map<string, Disk>();
  for (const n of names) {
    if (n === VOLUME_META || !n.endsWith(META_SUFFIX)) continue;
    const file = n.slice(0, -META_SUFFIX.length);
    const isHead = isHeadFile(file);
    if (!isHead && !isSnapshotFile(file)) continue;
    const p = path.join(dir, file);
    let meta: DiskMeta | ChainfsError;
    try {
      meta = parseDiskMeta(path.join(dir, n), readMetaFile(path.join(dir, n)));
    } catch (e) {
      if (!(e instanceof ChainfsError)) throw e;
      meta = e;
    }
    const d: Disk = { file, path: p, kind: isHead ? 'head' : 'snapshot', name: isHead ? file : snapshotName(file)!, meta };
    try {
      const st = fs.lstatSync(p);
      if (!st.isFile()) d.imgProblem = `disk file is ${fileKind(st)}, not a regular file (refused)`;
      else d.stat = st;
      if (st.isFile() && !readable(p)) d.imgProblem = 'disk file is not readable: permission denied';
    } catch (e) {
      d.imgProblem = (e as NodeJS.ErrnoException).code === 'ENOENT'
        ? `disk file is missing (its .meta exists)` : fsError(p, e).message;
    }
    disks.set(file, d);
  }
  const orphans: Orphan[] = [];
  for (const n of names) {
    if (!isDiskFile(n) || disks.has(n)) continue;
    try {
      const st = fs.lstatSync(path.join(dir, n));
      if (st.isFile()) orphans.push({ file: n, size: st.size, allocatedBytes: st.blocks * 512 });
    } catch {
      // gone meanwhile: nothing to list
    }
  }
  return { disks, orphans };
}

/** access(R_OK): so that every command, inspect included, says an unreadable layer is unusable. */
function readable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * volume.meta, or, when it is missing or empty, the engine's own recovery
 * (tryRecoverVolumeMetaFile) done in memory only: the head is the first file
 * whose name is a head, the size is that head's size.
 */
function readVolumeMeta(dir: string, disks: Map<string, Disk>, warnings: string[], recover: boolean): { meta: VolumeMeta; recovered: boolean } {
  const p = path.join(dir, VOLUME_META);
  let text = '';
  try {
    text = readMetaFile(p);
  } catch (e) {
    if (!(e instanceof ChainfsError) || e.code !== 'ENOENT') throw e;
  }
  let corrupt: ChainfsError | undefined;
  if (text.trim() !== '') {
    try {
      return { meta: parseVolumeMeta(p, text), recovered: false };
    } catch (e) {
      if (!(e instanceof ChainfsError)) throw e;
      // NUL-filled or cut short by a power loss: the engine would refuse it too.
      if (!recover) throw new ChainfsError(undefined, `${e.message}; pass --recover-volume-meta to recover it in memory from the head files, as the engine does for a missing volume.meta`);
      corrupt = e;
    }
  }

  const heads = [...disks.values()].filter((d) => d.kind === 'head');
  if (heads.length === 0) {
    throw new ChainfsError(p, 'volume.meta is missing or empty and no volume-head-NNN.img(.meta) exists to recover from; is this a Longhorn replica directory?');
  }
  const head = heads[0];
  if (head.meta instanceof ChainfsError) throw head.meta;
  if (!head.stat) throw new ChainfsError(head.path, head.imgProblem ?? 'missing');
  warnings.push(`${p}: ${corrupt ? 'corrupt (--recover-volume-meta)' : 'missing or empty'}; recovered in memory as the engine does (head ${head.file}, size ${head.stat.size}); a backing image, if any, must be given with --backing-file`);
  if (heads.length > 1) warnings.push(`${dir}: several head files (${heads.map((h) => h.file).join(', ')}); using ${head.file}`);
  return {
    recovered: true,
    meta: {
      size: head.stat.size, head: head.file, dirty: false, rebuilding: false, error: '',
      parent: head.meta.parent, sectorSize: 512, backingFilePath: '', encrypted: false,
    },
  };
}
