/**
 * Writes a Longhorn v1 replica directory the way longhorn-engine v1.4.4's
 * pkg/replica does, from a declarative scenario, with real holes: a new
 * head is a truncated (all-hole) file, a write allocates whole 4 KiB blocks
 * filled by read-modify-write through the chain, written zeros are
 * allocated, a trim punches holes. Metadata is byte-identical to the
 * engine's (see replica-meta.ts). The in-memory model it keeps along the
 * way is returned so tests know what each file and view must contain.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type BackingImage, type BackingSpec, writeBackingImage } from './backing-image';
import { type DataSpec, patternBytes } from './pattern';
import { type DiskMeta, encodeDiskMeta, encodeVolumeMeta, writeMetaFile } from './replica-meta';
import { BLOCK, type ModelLayer, ReplicaModel } from './replica-model';

export type { DataSpec } from './pattern';
export type { BackingSpec } from './backing-image';

export type Op =
  /** Any offset and length (unaligned allowed) inside the volume. */
  | { op: 'write'; offset: number; length: number; data: DataSpec }
  /** userCreated defaults to true (an API snapshot), labels to null, created to DEFAULT_CREATED. */
  | { op: 'snapshot'; name: string; userCreated?: boolean; labels?: Record<string, string> | null; created?: string }
  /** Marks snapshot `name` Removed:true; the engine rewrites its Name to its own file name then. */
  | { op: 'remove'; name: string }
  /** Snapshot `expand-<size>` (UserCreated false, label replica-expansion), then a head of the new size. */
  | { op: 'expand'; size: number }
  /** New head whose Parent is volume-snap-<name>.img; the old head is deleted; later snapshots stay off-chain. */
  | { op: 'revert'; name: string }
  /** Punches holes in the head over the 4 KiB-aligned inside of the range. */
  | { op: 'trim'; offset: number; length: number };

export interface Scenario {
  name: string;
  /** Initial volume size, a multiple of 4096. */
  size: number;
  backing?: BackingSpec;
  ops: Op[];
  /** volume.meta flags after the last op (default false: a clean close). */
  dirty?: boolean;
  rebuilding?: boolean;
}

export interface BuiltView {
  /** Layer file name inside `dir`, e.g. `volume-head-003.img` or `volume-snap-a.img`. */
  file: string;
  /** Snapshot name (file name minus `volume-snap-` and `.img`); absent for the head. */
  snapshot?: string;
  /** View length: the volume size for the head, the size at snapshot time for a snapshot. */
  size: number;
  /** The snapshot's `.meta` says Removed:true. */
  removed: boolean;
  /** The layer is an ancestor of (or is) the live head; false for branches left by a revert. */
  onHeadChain: boolean;
}

export interface BuiltReplica {
  /** Data root, e.g. `<tmp>/<name>-XXXXXX/longhorn`; holds `replicas/` and `backing-images/`. */
  root: string;
  /** `<root>/replicas/<name>-abcd1234`. */
  dir: string;
  /** `<root>/backing-images/bi-<name>-1f2e3d4c/backing`. */
  backingPath?: string;
  /** The head first, then every snapshot file (off-chain and removed ones included) in creation order. */
  views: BuiltView[];
  /** What every file and view must contain. */
  model: ReplicaModel;
}

/** `Created` of every disk unless an op says otherwise (RFC 3339 UTC, seconds, like util.Now()). */
export const DEFAULT_CREATED = '2024-05-01T10:00:00Z';
/** The 8 random characters of a replica directory name, fixed so fixtures are reproducible. */
export const REPLICA_DIR_SUFFIX = 'abcd1234';

export function buildReplica(s: Scenario, parentTmpDir: string): BuiltReplica {
  if (!/^[a-z0-9][a-z0-9.-]*$/.test(s.name)) throw new Error(`scenario name ${JSON.stringify(s.name)} is not a volume name`);
  const base = fs.mkdtempSync(path.join(path.resolve(parentTmpDir), `${s.name}-`));
  const root = path.join(base, 'longhorn');
  const dir = path.join(root, 'replicas', `${s.name}-${REPLICA_DIR_SUFFIX}`);
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, 0o700);
  const backing = s.backing ? writeBackingImage(root, s.name, s.backing, base) : undefined;
  if (backing && backing.content.length > s.size) throw new Error(`backing image is larger than the ${s.size}-byte volume`);

  const replica = new ReplicaWriter(dir, s.size, backing);
  for (const op of s.ops) replica.apply(op);
  replica.close(s.dirty ?? false, s.rebuilding ?? false);

  return { root, dir, ...(backing ? { backingPath: backing.path } : {}), views: replica.views(), model: replica.model };
}

/**
 * The engine's next head name (pkg/replica nextFile): the regex
 * `volume-head-(\d)+.img` captures only the LAST digit, so 009 -> 010 but
 * 010 -> 001.
 */
export function nextHeadName(head: string): string {
  const m = /volume-head-(\d)+.img/.exec(head);
  if (!m) throw new Error(`${head} is not a head name`);
  return `volume-head-${String(Number(m[1]) + 1).padStart(3, '0')}.img`;
}

export function snapshotFile(name: string): string {
  return `volume-snap-${name}.img`;
}

/** One replica being written: engine operations on files and model together. */
class ReplicaWriter {
  readonly model: ReplicaModel;
  private size: number;
  /** Layer files in creation order (the head is moved to the end of views()). */
  private readonly created: string[] = [];
  /**
   * Blocks trimmed since the engine last (re)opened the replica. The live
   * engine's location cache still points at the punched file for them, so a
   * partial write there would read-modify-write zeros, while a fresh open
   * would read the layer below: the result depends on engine state this
   * builder does not model, so it refuses such writes.
   */
  private readonly staleTrimmed = new Set<number>();

  constructor(
    private readonly dir: string,
    size: number,
    private readonly backing: BackingImage | undefined,
  ) {
    if (size <= 0 || size % BLOCK !== 0) throw new Error(`volume size ${size} is not a positive multiple of ${BLOCK}`);
    this.size = size;
    this.model = new ReplicaModel(backing ? backing.content : null);
    this.model.head = this.createHead('volume-head-000.img', '', DEFAULT_CREATED, size);
    this.writeVolumeMeta(true, false);
  }

  apply(op: Op): void {
    switch (op.op) {
      case 'write':
        return this.write(op.offset, op.length, op.data);
      case 'snapshot':
        return this.snapshot(op.name, op.userCreated ?? true, op.created ?? DEFAULT_CREATED, op.labels ?? null, this.size);
      case 'remove':
        return this.remove(op.name);
      case 'expand':
        return this.expand(op.size);
      case 'revert':
        return this.revert(op.name);
      case 'trim':
        return this.trim(op.offset, op.length);
    }
  }

  close(dirty: boolean, rebuilding: boolean): void {
    this.writeVolumeMeta(dirty, rebuilding);
  }

  views(): BuiltView[] {
    const onChain = new Set(this.model.chain(this.model.head).map((l) => l.file));
    const files = [this.model.head, ...this.created.filter((f) => f !== this.model.head && this.model.layers.has(f))];
    return files.map((file) => {
      const l = this.model.layer(file);
      const snapshot = file === this.model.head ? undefined : file.slice('volume-snap-'.length, -'.img'.length);
      return { file, ...(snapshot !== undefined ? { snapshot } : {}), size: l.size, removed: l.meta.Removed, onHeadChain: onChain.has(file) };
    });
  }

  private p(file: string): string {
    return path.join(this.dir, file);
  }

  /** createNewHead: open O_TRUNC, truncate to the size (all hole), write its .meta. */
  private createHead(file: string, parent: string, created: string, size: number): string {
    if (fs.existsSync(this.p(file))) throw new Error(`${file} already exists (the engine refuses this too)`);
    const fd = fs.openSync(this.p(file), 'w');
    fs.ftruncateSync(fd, size);
    fs.closeSync(fd);
    const meta: DiskMeta = { Name: file, Parent: parent, Removed: false, UserCreated: false, Created: created, Labels: null };
    writeMetaFile(this.p(`${file}.meta`), encodeDiskMeta(meta));
    this.model.layers.set(file, { file, size, meta, blocks: new Map() });
    this.created.push(file);
    return file;
  }

  /**
   * createDisk: new head, hard-link old head -> volume-snap-<name>.img,
   * volume.meta, snapshot .meta (still carrying the old head's Name: the
   * engine encodes the struct before fixing Name, longhorn#13728), unlink
   * the old head and its .meta.
   */
  private snapshot(name: string, userCreated: boolean, created: string, labels: Record<string, string> | null, size: number): void {
    const snap = snapshotFile(name);
    if (this.model.layers.has(snap)) throw new Error(`snapshot ${name} already exists`);
    const oldHead = this.model.layer(this.model.head);
    const newHead = this.createHead(nextHeadName(oldHead.file), snap, created, size);
    fs.linkSync(this.p(oldHead.file), this.p(snap));
    this.model.head = newHead;
    this.size = size;
    this.writeVolumeMeta(true, false);
    const meta: DiskMeta = { ...oldHead.meta, UserCreated: userCreated, Created: created, Labels: labels };
    writeMetaFile(this.p(`${snap}.meta`), encodeDiskMeta(meta));
    fs.unlinkSync(this.p(oldHead.file));
    fs.unlinkSync(this.p(`${oldHead.file}.meta`));
    this.model.layers.delete(oldHead.file);
    this.model.layers.set(snap, { ...oldHead, file: snap, meta });
    this.created[this.created.indexOf(oldHead.file)] = snap;
  }

  private expand(size: number): void {
    if (size % BLOCK !== 0 || size <= this.size) throw new Error(`cannot expand from ${this.size} to ${size}`);
    this.snapshot(`expand-${size}`, false, DEFAULT_CREATED, { 'replica-expansion': String(size) }, size);
  }

  /** markDiskAsRemoved: the in-memory struct (Name = own file name) is re-encoded with Removed:true. */
  private remove(name: string): void {
    const file = snapshotFile(name);
    const l = this.model.layer(file);
    l.meta = { ...l.meta, Name: file, Removed: true };
    writeMetaFile(this.p(`${file}.meta`), encodeDiskMeta(l.meta));
  }

  /** revertDisk: new head over the snapshot at the current size, old head deleted, then a reload. */
  private revert(name: string): void {
    const target = this.model.layer(snapshotFile(name));
    if (target.meta.Removed) throw new Error(`cannot revert to removed snapshot ${name}`);
    const oldHead = this.model.head;
    this.model.head = this.createHead(nextHeadName(oldHead), target.file, DEFAULT_CREATED, this.size);
    this.writeVolumeMeta(true, false);
    fs.unlinkSync(this.p(oldHead));
    fs.unlinkSync(this.p(`${oldHead}.meta`));
    this.model.layers.delete(oldHead);
    this.created.splice(this.created.indexOf(oldHead), 1);
    this.staleTrimmed.clear();
  }

  /** diffDisk WriteAt: whole 4 KiB blocks into the head, partial ones read-modify-written through the chain. */
  private write(offset: number, length: number, data: DataSpec): void {
    if (offset < 0 || length <= 0 || offset + length > this.size) {
      throw new Error(`write ${offset}+${length} is outside the ${this.size}-byte volume`);
    }
    const bytes = patternBytes(data, length);
    const head = this.model.layer(this.model.head);
    const fd = fs.openSync(this.p(head.file), 'r+');
    try {
      for (let b = Math.floor(offset / BLOCK); b * BLOCK < offset + length; b++) {
        const start = b * BLOCK;
        const from = Math.max(offset, start);
        const to = Math.min(offset + length, start + BLOCK);
        const whole = from === start && to === start + BLOCK;
        if (!whole && this.staleTrimmed.has(b)) {
          throw new Error(`partial write into block ${b}, trimmed since the last reopen: the engine's result depends on its cache`);
        }
        const block = whole ? Buffer.alloc(BLOCK) : this.model.readBlock(head.file, b);
        bytes.copy(block, from - start, from - offset, to - offset);
        fs.writeSync(fd, block, 0, BLOCK, start);
        head.blocks.set(b, block);
        this.staleTrimmed.delete(b);
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * UnmapAt on the head: punch the 4 KiB-aligned inside of the range. The
   * engine would also punch Removed snapshots under the head (down to the
   * first branch point); that is not modelled, so such a chain is refused.
   */
  private trim(offset: number, length: number): void {
    if (offset < 0 || length <= 0 || offset + length > this.size) {
      throw new Error(`trim ${offset}+${length} is outside the ${this.size}-byte volume`);
    }
    const below: ModelLayer[] = this.model.chain(this.model.head).slice(1);
    for (const l of below) {
      if (this.model.children(l.file).length > 1) break;
      if (l.meta.Removed) throw new Error(`trim with removed snapshot ${l.file} under the head: the engine would punch it too (not modelled)`);
    }
    const first = Math.ceil(offset / BLOCK);
    const end = Math.floor((offset + length) / BLOCK);
    if (end <= first) return;
    execFileSync('fallocate', ['-p', '-o', String(first * BLOCK), '-l', String((end - first) * BLOCK), this.p(this.model.head)]);
    const head = this.model.layer(this.model.head);
    for (let b = first; b < end; b++) {
      head.blocks.delete(b);
      this.staleTrimmed.add(b);
    }
  }

  private writeVolumeMeta(dirty: boolean, rebuilding: boolean): void {
    const head = this.model.layer(this.model.head);
    writeMetaFile(
      this.p('volume.meta'),
      encodeVolumeMeta({
        Size: this.size,
        Head: head.file,
        Dirty: dirty,
        Rebuilding: rebuilding,
        Error: '',
        Parent: head.meta.Parent,
        SectorSize: 512,
        BackingFilePath: this.backing ? `/host${this.backing.path}` : '',
      }),
    );
  }
}
