/**
 * A small SPDK blobstore/lvstore writer for tests, written from the format
 * document (../shared/longhorn-v2-spdk.md §C.2) and SPDK's on-disk structs,
 * not from chainfs's parser: super block v3, mask pages, md pages with
 * CRC-32C and `next` chains, FLAGS / XATTR / XATTR_INTERNAL descriptors,
 * extent tables + extent pages (or EXTENT_RLE), 1 MiB clusters.
 *
 * It keeps a model of what it wrote and applies SPDK's semantics to it:
 * thin lvols, a first write to a cluster allocates it (copying the parent's
 * cluster, or zeros), a snapshot takes over its origin's clusters, a clone
 * is a thin lvol whose SNAP is the snapshot, deleting a snapshot with one
 * clone moves its clusters into the clone and relinks it. `read(id)` is the
 * oracle of each lvol's content; `ops` is the history, for a qemu replay.
 */
import * as fs from 'node:fs';
import { crc32c } from '../../src/source/spdk/crc32c';

export const MiB = 1 << 20;
const PAGE = 4096;
const NO_NEXT = 0xffffffff;

export interface BlobModel {
  id: number;
  name: string;
  uuid: string;
  thin: boolean;
  readOnly: boolean;
  /** Device cluster per cluster, 0 = unallocated. */
  clusters: number[];
  /** Md page of the extent page of each 512-cluster range (0 = none yet), allocated on the range's first cluster as SPDK does. */
  extentPages: number[];
  parent?: number;
  xattrs: Map<string, Buffer>;
  internal: Map<string, Buffer>;
}

export type Op =
  | { op: 'create'; id: number; size: number }
  | { op: 'write'; id: number; offset: number; data: Buffer }
  | { op: 'snapshot'; origin: number; snap: number }
  | { op: 'clone'; snap: number; id: number }
  | { op: 'resize'; id: number; size: number }
  | { op: 'delete'; id: number };

export interface BuilderOptions {
  /** Clusters of the device (the image is `clusters` MiB). */
  clusters?: number;
  lvsName?: string;
  lvsUuid?: string;
  /** EXTENT_TABLE + extent pages (SPDK's default for lvols) or EXTENT_RLE. */
  extentTable?: boolean;
  /** Stride of metadata pages (SPDK v25.01+: the device's physical block when larger than 4 KiB). */
  mdPageSize?: number;
}

export interface BuildOptions {
  /** clean = 1 and masks written (a clean unload), else clean = 0 and masks zero (a crash). */
  clean?: boolean;
}

let uuidSeq = 0;
export function fakeUuid(): string {
  const h = (++uuidSeq).toString(16).padStart(12, '0');
  return `0b0e0c0d-1111-4222-8333-${h}`;
}

export class SpdkDiskBuilder {
  readonly clusterSize = MiB;
  readonly totalClusters: number;
  readonly mdStart: number;
  readonly mdLen: number;
  /** md_page_size: the stride of md pages and mask pages (each page's struct stays 4 KiB). */
  readonly mdPageSize: number;
  /** Pages of the three masks (used md pages, used clusters, used blob ids), after the super block. */
  private readonly maskPages: [number, number, number];
  readonly firstData: number;
  readonly lvsName: string;
  readonly lvsUuid: string;
  readonly extentTable: boolean;
  readonly blobs = new Map<number, BlobModel>();
  readonly ops: Op[] = [];
  /** Content of each used device cluster (null: zeros, not stored; see `allocateZero`). */
  private readonly data = new Map<number, Buffer | null>();
  private readonly usedPages = new Set<number>([0]);

  constructor(opts: BuilderOptions = {}) {
    this.totalClusters = opts.clusters ?? 64;
    this.mdLen = this.totalClusters;
    this.mdPageSize = opts.mdPageSize ?? PAGE;
    const pages = (bits: number) => Math.ceil((5 + Math.ceil(bits / 8)) / this.mdPageSize);
    this.maskPages = [pages(this.mdLen), pages(this.totalClusters), pages(this.mdLen)];
    this.mdStart = 1 + this.maskPages[0] + this.maskPages[1] + this.maskPages[2];
    this.firstData = Math.ceil((this.mdStart + this.mdLen) / (this.clusterSize / this.mdPageSize));
    this.lvsName = opts.lvsName ?? 'disk-1';
    this.lvsUuid = opts.lvsUuid ?? fakeUuid();
    this.extentTable = opts.extentTable ?? true;
  }

  /** A new thin lvol of `size` bytes (a multiple of 1 MiB); returns its blob id. */
  create(name: string, size: number, parent?: number): number {
    const id = this.newBlob(name, size / this.clusterSize);
    if (parent !== undefined) this.setParent(id, parent);
    this.ops.push({ op: 'create', id, size });
    return id;
  }

  /** Writes `data` at `offset` of lvol `id`, allocating clusters as SPDK does. */
  write(id: number, offset: number, data: Buffer): void {
    const b = this.blob(id);
    for (let pos = offset; pos < offset + data.length;) {
      const c = Math.floor(pos / this.clusterSize);
      if (c >= b.clusters.length) throw new Error('write past the lvol end');
      if (b.clusters[c] === 0) {
        const dc = this.allocCluster();
        this.data.set(dc, this.readCluster(b.parent, c));
        b.clusters[c] = dc;
        this.needExtentPage(b, c);
      }
      const inC = pos - c * this.clusterSize;
      const n = Math.min(this.clusterSize - inC, offset + data.length - pos);
      let target = this.data.get(b.clusters[c]);
      if (!target) this.data.set(b.clusters[c], target = Buffer.alloc(this.clusterSize));
      data.copy(target, inC, pos - offset, pos - offset + n);
      pos += n;
    }
    this.ops.push({ op: 'write', id, offset, data });
  }

  /**
   * Allocates cluster `c` of lvol `id` holding zeros (not its parent's
   * bytes), with no data kept or written: metadata-heavy images
   * (benchmarks) cheaply; not a history SPDK would make.
   */
  allocateZero(id: number, c: number): void {
    const b = this.blob(id);
    if (b.clusters[c] !== 0) throw new Error('allocateZero: cluster already allocated');
    b.clusters[c] = this.allocCluster();
    this.data.set(b.clusters[c], null);
    this.needExtentPage(b, c);
  }

  /** Snapshot of `origin` named `name` (Longhorn's xattrs given); returns the snapshot's id. */
  snapshot(origin: number, name: string, xattrs: Record<string, string> = {}): number {
    const o = this.blob(origin);
    const id = this.newBlob(name, 0);
    const s = this.blob(id);
    s.clusters = o.clusters;
    s.extentPages = o.extentPages;
    o.extentPages = [];
    s.readOnly = true;
    if (o.parent !== undefined) this.setParent(id, o.parent);
    for (const [k, v] of Object.entries(xattrs)) s.xattrs.set(k, Buffer.from(`${v}\0`));
    o.clusters = new Array(s.clusters.length).fill(0);
    this.setParent(origin, id);
    this.ops.push({ op: 'snapshot', origin, snap: id });
    return id;
  }

  /** A thin clone of snapshot `snap`; returns its id. */
  clone(snap: number, name: string): number {
    const id = this.newBlob(name, this.blob(snap).clusters.length);
    this.setParent(id, snap);
    this.ops.push({ op: 'clone', snap, id });
    return id;
  }

  /** Resizes lvol `id`; shrinking releases the clusters past the new end (SPDK's `blob_resize`). */
  resize(id: number, size: number): void {
    const b = this.blob(id);
    const n = size / this.clusterSize;
    for (const dc of b.clusters.slice(n)) if (dc !== 0) this.data.delete(dc);
    b.clusters.length = Math.min(b.clusters.length, n);
    while (b.clusters.length < n) b.clusters.push(0);
    this.ops.push({ op: 'resize', id, size });
  }

  /** Deletes an lvol; a snapshot with one clone gives its clusters to the clone, which is relinked to its parent. */
  delete(id: number): void {
    const b = this.blob(id);
    const clones = [...this.blobs.values()].filter((x) => x.parent === id);
    if (clones.length > 1) throw new Error('SPDK refuses to delete a snapshot with several clones');
    if (clones.length === 1) {
      const c = clones[0];
      for (let i = 0; i < c.clusters.length; i++) {
        if (c.clusters[i] === 0 && i < b.clusters.length && b.clusters[i] !== 0) { c.clusters[i] = b.clusters[i]; b.clusters[i] = 0; }
      }
      for (const p of b.extentPages) if (p) this.usedPages.delete(p);
      b.extentPages = [];
      for (let i = 0; i < c.clusters.length; i++) if (c.clusters[i] !== 0) this.needExtentPage(c, i);
      if (b.parent !== undefined) this.setParent(c.id, b.parent);
      else { c.parent = undefined; c.internal.delete('SNAP'); }
    }
    for (const dc of b.clusters) if (dc !== 0) this.data.delete(dc);
    for (const p of b.extentPages) if (p) this.usedPages.delete(p);
    this.blobs.delete(id);
    this.usedPages.delete(id - 2 ** 32);
    this.ops.push({ op: 'delete', id });
  }

  /** Sets an internal xattr (SNAPTMP/SNAPRM to a blob id, or anything) — for torn states. */
  setInternal(id: number, key: string, value: Buffer): void {
    this.blob(id).internal.set(key, value);
  }

  setParent(id: number, parent: number): void {
    const b = this.blob(id);
    b.parent = parent;
    b.internal.set('SNAP', u64(parent));
  }

  blob(id: number): BlobModel {
    const b = this.blobs.get(id);
    if (!b) throw new Error(`no blob ${id.toString(16)}`);
    return b;
  }

  byName(name: string): BlobModel {
    const b = [...this.blobs.values()].find((x) => x.name === name);
    if (!b) throw new Error(`no lvol ${name}`);
    return b;
  }

  /** The oracle: lvol `id`'s whole content as SPDK reads it. */
  read(id: number): Buffer {
    const b = this.blob(id);
    const out = Buffer.alloc(b.clusters.length * this.clusterSize);
    for (let c = 0; c < b.clusters.length; c++) this.readCluster(id, c).copy(out, c * this.clusterSize);
    return out;
  }

  /** Cluster `c` of blob `id` (or zeros for no blob, or past its end). */
  private readCluster(id: number | undefined, c: number): Buffer {
    if (id === undefined) return Buffer.alloc(this.clusterSize);
    const b = this.blob(id);
    if (c >= b.clusters.length) return Buffer.alloc(this.clusterSize);
    if (b.clusters[c] !== 0) return Buffer.from(this.data.get(b.clusters[c]) ?? Buffer.alloc(this.clusterSize));
    return this.readCluster(b.parent, c);
  }

  private needExtentPage(b: BlobModel, cluster: number): void {
    const r = Math.floor(cluster / 512);
    if (this.extentTable && !b.extentPages[r]) b.extentPages[r] = this.allocPage();
  }

  private newBlob(name: string, clusters: number): number {
    const page = this.allocPage();
    const id = 2 ** 32 + page;
    const nameBuf = Buffer.alloc(256);
    nameBuf.write(name);
    const uuid = fakeUuid();
    this.blobs.set(id, {
      id, name, uuid, thin: true, readOnly: false, clusters: new Array(clusters).fill(0), extentPages: [],
      xattrs: new Map([['name', nameBuf], ['uuid', Buffer.from(`${uuid}\0`)], ['creation_time', Buffer.from('2026-11-30T08:00:00Z\0')]]),
      internal: new Map(),
    });
    return id;
  }

  private allocPage(): number {
    for (let p = 1; p < this.mdLen; p++) if (!this.usedPages.has(p)) { this.usedPages.add(p); return p; }
    throw new Error('md region full');
  }

  /** The lowest free cluster, as SPDK's `bs_allocate_cluster` takes it. */
  private allocCluster(): number {
    for (let c = this.firstData; c < this.totalClusters; c++) if (!this.data.has(c)) return c;
    throw new Error('disk full');
  }

  /**
   * Writes the image to `file` (sparse): super block, masks (clean) or zero
   * masks (crashed), every blob's md pages and extent pages, cluster data.
   * Returns, per blob id, the md pages it was given (first page first).
   */
  build(file: string, opts: BuildOptions = {}): Map<number, number[]> {
    const clean = opts.clean ?? true;
    const fd = fs.openSync(file, 'w');
    const layout = new Map<number, number[]>();
    try {
      fs.ftruncateSync(fd, this.totalClusters * this.clusterSize);
      const pages = new Set(this.usedPages);
      const take = () => { for (let p = 1; p < this.mdLen; p++) if (!pages.has(p)) { pages.add(p); return p; } throw new Error('md full'); };
      const sup = this.serialize({
        id: 2 ** 32, name: '', uuid: '', thin: false, readOnly: false, clusters: [], extentPages: [],
        xattrs: new Map([['uuid', Buffer.from(`${this.lvsUuid}\0`)], ['name', Buffer.from(`${this.lvsName}\0`)]]), internal: new Map(),
      });
      this.writePages(fd, 2 ** 32, sup, layout, take);
      for (const b of [...this.blobs.values()].sort((x, y) => x.id - y.id)) this.writePages(fd, b.id, this.serialize(b), layout, take);
      for (const [dc, buf] of this.data) if (buf) fs.writeSync(fd, buf, 0, buf.length, dc * this.clusterSize);
      const usedMd = [...layout.values()].flat();
      const usedClusters = [...Array(this.firstData).keys(), ...[...this.data.keys()]];
      if (clean) {
        const [pm, cm] = this.maskPages;
        const ps = this.mdPageSize;
        writeMask(fd, ps, 1, 0, this.mdLen, usedMd);
        writeMask(fd, ps, 1 + pm, 1, this.totalClusters, usedClusters);
        writeMask(fd, ps, 1 + pm + cm, 2, this.mdLen, [...layout.keys()].map((id) => id - 2 ** 32));
      }
      fs.writeSync(fd, this.superBlock(clean), 0, PAGE, 0);
    } finally {
      fs.closeSync(fd);
    }
    return layout;
  }

  private superBlock(clean: boolean): Buffer {
    const s = Buffer.alloc(PAGE);
    s.write('SPDKBLOB', 0, 'latin1');
    s.writeUInt32LE(3, 8);
    s.writeUInt32LE(PAGE, 12);
    s.writeUInt32LE(clean ? 1 : 0, 16);
    s.writeBigUInt64LE(2n ** 32n, 20);
    s.writeUInt32LE(this.clusterSize, 28);
    const [pm, cm, bm] = this.maskPages;
    s.writeUInt32LE(1, 32); s.writeUInt32LE(pm, 36);
    s.writeUInt32LE(1 + pm, 40); s.writeUInt32LE(cm, 44);
    s.writeUInt32LE(this.mdStart, 48); s.writeUInt32LE(this.mdLen, 52);
    s.write('LVOLSTORE', 56, 'latin1');
    s.writeUInt32LE(1 + pm + cm, 72); s.writeUInt32LE(bm, 76);
    s.writeBigUInt64LE(BigInt(this.totalClusters * this.clusterSize), 80);
    s.writeUInt32LE(512, 88);
    s.writeUInt32LE(this.mdPageSize, 92);
    s.writeUInt32LE(crc32c(s, 0, 4092), 4092);
    return s;
  }

  /** The descriptors of a blob, packed into pages' descriptor areas; extent pages written through `take`. */
  private serialize(b: BlobModel): { descs: Buffer[]; extentPages: { page: number; body: Buffer }[] } {
    const descs: Buffer[] = [];
    let invalid = (b.thin ? 1 : 0) | (b.internal.size ? 2 : 0) | (b.internal.has('EXTSNAP') ? 8 : 0);
    const extentPages: { page: number; body: Buffer }[] = [];
    const ext: Buffer[] = [];
    if (this.extentTable) {
      invalid |= 4;
      const entries: number[] = [];
      for (let start = 0; start < b.clusters.length; start += 512) {
        const part = b.clusters.slice(start, start + 512);
        const page = b.extentPages[start / 512] ?? 0;
        if (!page) {
          const last = entries.length - 2;
          if (last >= 0 && entries[last] === 0) entries[last + 1]++;
          else entries.push(0, 1);
          continue;
        }
        const body = Buffer.alloc(4 + 4 * part.length);
        body.writeUInt32LE(start, 0);
        part.forEach((c, i) => body.writeUInt32LE(c, 4 + 4 * i));
        extentPages.push({ page, body });
        entries.push(page, 1);
      }
      const t = Buffer.alloc(8 + 4 * entries.length);
      t.writeBigUInt64LE(BigInt(b.clusters.length), 0);
      entries.forEach((e, i) => t.writeUInt32LE(e, 8 + 4 * i));
      ext.push(desc(5, t));
    } else if (b.clusters.length) {
      const runs: number[] = [];
      for (const c of b.clusters) {
        const n = runs.length;
        if (n && ((c === 0 && runs[n - 2] === 0) || (c !== 0 && runs[n - 2] !== 0 && runs[n - 2] + runs[n - 1] === c))) runs[n - 1]++;
        else runs.push(c, 1);
      }
      for (let i = 0; i < runs.length; i += 200) {
        const part = runs.slice(i, i + 200);
        const body = Buffer.alloc(4 * part.length);
        part.forEach((v, k) => body.writeUInt32LE(v, 4 * k));
        ext.push(desc(1, body));
      }
    }
    const flags = Buffer.alloc(24);
    flags.writeBigUInt64LE(BigInt(invalid), 0);
    flags.writeBigUInt64LE(b.readOnly ? 1n : 0n, 8);
    descs.push(desc(3, flags));
    for (const [k, v] of b.xattrs) descs.push(desc(2, xattr(k, v)));
    for (const [k, v] of b.internal) descs.push(desc(4, xattr(k, v)));
    descs.push(...ext);
    return { descs, extentPages };
  }

  private writePages(fd: number, id: number, s: { descs: Buffer[]; extentPages: { page: number; body: Buffer }[] },
    layout: Map<number, number[]>, take: () => number): void {
    const areas: Buffer[][] = [[]];
    let used = 0;
    for (const d of s.descs) {
      if (d.length > 4072) throw new Error('descriptor too large for a page');
      if (used + d.length > 4072) { areas.push([]); used = 0; }
      areas[areas.length - 1].push(d);
      used += d.length;
    }
    const pageNums = [id - 2 ** 32, ...areas.slice(1).map(() => take())];
    layout.set(id, pageNums);
    areas.forEach((a, i) => {
      const p = Buffer.alloc(PAGE);
      p.writeBigUInt64LE(BigInt(id), 0);
      p.writeUInt32LE(i, 8);
      Buffer.concat(a).copy(p, 16);
      p.writeUInt32LE(i + 1 < pageNums.length ? pageNums[i + 1] : NO_NEXT, 4088);
      p.writeUInt32LE(crc32c(p, 0, 4092), 4092);
      fs.writeSync(fd, p, 0, PAGE, this.pageOffset(pageNums[i]));
    });
    for (const e of s.extentPages) {
      const p = Buffer.alloc(PAGE);
      p.writeBigUInt64LE(BigInt(id), 0);
      desc(6, e.body).copy(p, 16);
      p.writeUInt32LE(NO_NEXT, 4088);
      p.writeUInt32LE(crc32c(p, 0, 4092), 4092);
      fs.writeSync(fd, p, 0, PAGE, this.pageOffset(e.page));
    }
  }

  /** Byte offset of md page `page` (relative to md_start) in the image. */
  pageOffset(page: number): number {
    return (this.mdStart + page) * this.mdPageSize;
  }
}

function desc(type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = type;
  h.writeUInt32LE(body.length, 1);
  return Buffer.concat([h, body]);
}

function xattr(name: string, value: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(name.length, 0);
  h.writeUInt16LE(value.length, 2);
  return Buffer.concat([h, Buffer.from(name, 'latin1'), value]);
}

export function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

function writeMask(fd: number, pageSize: number, page: number, type: number, bits: number, set: number[]): void {
  const m = Buffer.alloc(Math.ceil((5 + Math.ceil(bits / 8)) / pageSize) * pageSize);
  m[0] = type;
  m.writeUInt32LE(bits, 1);
  for (const i of set) m[5 + (i >> 3)] |= 1 << (i & 7);
  fs.writeSync(fd, m, 0, m.length, page * pageSize);
}
