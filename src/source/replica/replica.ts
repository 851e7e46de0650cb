/**
 * A replica directory, read-only: volume.meta, every disk's .meta, the chain
 * of any view (following Parent links, never file-name order), and where the
 * backing image is. Opening reads only metadata and stats files; no layer
 * data is touched.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChainfsError, fsError, oneLine } from '../../errors';
import { locateBacking, type BackingLocation } from './backing';
import { fileKind, readMetaFile } from './files';
import { parseDiskMeta, parseVolumeMeta, type DiskMeta, type VolumeMeta } from './meta';
import {
  MAX_CHAIN_LENGTH, META_SUFFIX, VOLUME_META, isHeadFile, isPlainName, isSnapshotFile, snapshotFile, snapshotName,
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
}

export class Replica {
  readonly dir: string;
  readonly meta: VolumeMeta;
  /** volume.meta was missing or empty and was recovered in memory (never written). */
  readonly metaRecovered: boolean;
  readonly disks: Map<string, Disk>;
  readonly backing: BackingLocation | null;
  readonly warnings: string[];
  private readonly chains = new Map<string, Disk[]>();

  private constructor(dir: string, meta: VolumeMeta, recovered: boolean, disks: Map<string, Disk>,
    backing: BackingLocation | null, warnings: string[]) {
    this.dir = dir;
    this.meta = meta;
    this.metaRecovered = recovered;
    this.disks = disks;
    this.backing = backing;
    this.warnings = warnings;
  }

  static open(dir: string, opts: OpenOptions = {}): Replica {
    const abs = path.resolve(dir);
    checkDirectory(abs);
    const warnings: string[] = [];
    const disks = scanDisks(abs);
    const { meta, recovered } = readVolumeMeta(abs, disks, warnings);
    const metaPath = path.join(abs, VOLUME_META);
    if (meta.rebuilding) {
      if (!opts.force) {
        throw new ChainfsError(metaPath, 'replica is Rebuilding (its data is incomplete); pass --force to read it anyway');
      }
      warnings.push(`${metaPath}: replica is Rebuilding: its data may be incomplete (--force)`);
    }
    if (meta.dirty) {
      warnings.push(`${metaPath}: Dirty is true: the replica was not closed cleanly, or is in use by an engine`);
    }
    if (meta.error) warnings.push(`${metaPath}: Error recorded: ${oneLine(meta.error, 300)}`);
    if (meta.encrypted) {
      warnings.push(`${metaPath}: volume is encrypted: views hold LUKS2 ciphertext (open them with cryptsetup)`);
    }
    let backing: BackingLocation | null = null;
    if (opts.backingFile || meta.backingFilePath) {
      backing = locateBacking(abs, meta.backingFilePath, opts.backingFile);
    }
    const r = new Replica(abs, meta, recovered, disks, backing, warnings);
    const chain = r.chain(meta.head); // the head's chain must be sound for any command
    const head = chain[0];
    const headParent = (head.meta as DiskMeta).parent;
    if (!recovered && meta.parent !== headParent) {
      // The engine re-derives Parent from the head's .meta; so do we.
      warnings.push(`${metaPath}: Parent ${JSON.stringify(meta.parent)} differs from ${head.file}.meta's ${JSON.stringify(headParent)}; following the head's .meta, as the engine does`);
    }
    if (head.stat && head.stat.size !== meta.size) {
      warnings.push(`${head.path}: file size ${head.stat.size} differs from volume.meta Size ${meta.size}; the volume is ${meta.size} bytes`);
    }
    return r;
  }

  /** Every snapshot disk, in the head's chain or not, oldest first by chain then name. */
  snapshots(): Disk[] {
    return [...this.disks.values()].filter((d) => d.kind === 'snapshot')
      .sort((a, b) => a.file.localeCompare(b.file));
  }

  /** The view root for `--snapshot NAME` (a name or a file name); the head when undefined. */
  viewRoot(snapshot?: string): Disk {
    if (snapshot === undefined) return this.disk(this.meta.head, path.join(this.dir, VOLUME_META), 'Head');
    const file = isSnapshotFile(snapshot) ? snapshot : snapshotFile(snapshot);
    const d = isPlainName(file) ? this.disks.get(file) : undefined;
    if (!d || d.kind !== 'snapshot') {
      const names = this.snapshots().map((s) => s.name);
      throw new ChainfsError(this.dir, `no snapshot named ${JSON.stringify(snapshot)}; snapshots: ${names.length ? names.join(', ') : '(none)'}`);
    }
    return d;
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
  if (!st.isDirectory()) throw new ChainfsError(dir, `not a directory (${fileKind(st)}); expected a Longhorn replica directory`);
}

/** Every `<disk>.meta` except volume.meta is a disk, as in the engine's readMetadata. */
function scanDisks(dir: string): Map<string, Disk> {
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
  return disks;
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
function readVolumeMeta(dir: string, disks: Map<string, Disk>, warnings: string[]): { meta: VolumeMeta; recovered: boolean } {
  const p = path.join(dir, VOLUME_META);
  let text = '';
  try {
    text = readMetaFile(p);
  } catch (e) {
    if (!(e instanceof ChainfsError) || e.code !== 'ENOENT') throw e;
  }
  if (text.trim() !== '') return { meta: parseVolumeMeta(p, text), recovered: false };

  const heads = [...disks.values()].filter((d) => d.kind === 'head');
  if (heads.length === 0) {
    throw new ChainfsError(p, 'volume.meta is missing or empty and no volume-head-NNN.img(.meta) exists to recover from; is this a Longhorn replica directory?');
  }
  const head = heads[0];
  if (head.meta instanceof ChainfsError) throw head.meta;
  if (!head.stat) throw new ChainfsError(head.path, head.imgProblem ?? 'missing');
  warnings.push(`${p}: missing or empty; recovered in memory as the engine does (head ${head.file}, size ${head.stat.size}); a backing image, if any, must be given with --backing-file`);
  if (heads.length > 1) warnings.push(`${dir}: several head files (${heads.map((h) => h.file).join(', ')}); using ${head.file}`);
  return {
    recovered: true,
    meta: {
      size: head.stat.size, head: head.file, dirty: false, rebuilding: false, error: '',
      parent: head.meta.parent, sectorSize: 512, backingFilePath: '', encrypted: false,
    },
  };
}
