/**
 * A read-only qcow2 reader: the bottom layer of a chain (a Longhorn backing
 * image). Follows qemu's docs/interop/qcow2.txt for versions 2 and 3.
 *
 * A backing image has nothing below it, so this layer never says `absent`:
 * unallocated clusters, zero clusters and the area past the virtual size
 * are all `zero`.
 *
 * Every offset and size taken from the file is checked before it is used;
 * problems found at open throw ChainfsError, problems found while reading
 * throw LayerReadError. Nothing the file says drives an unbounded loop or
 * allocation: the L1 table is capped as in qemu, L2 tables and compressed
 * clusters are one cluster (at most 2 MiB) each.
 */
import * as fs from 'fs';
import * as zlib from 'zlib';
import { LRUCache } from 'lru-cache';
import { ChainfsError, LayerReadError, fsError } from '../errors';
import { preadUpTo } from './file-layer';
import type { BlockStatus, DirectPiece, Layer, RunKind } from './layer';

export const QCOW2_MAGIC = 0x514649fb;

/** qemu's QCOW_MAX_L1_SIZE: 32 MiB of L1 entries (4 Mi entries); we hold at most that in memory. */
const MAX_L1_BYTES = 32 * 1024 * 1024;
/** L2 tables kept in memory. 8 MiB is 128 tables (64 GiB of guest space) at 64 KiB clusters. */
const L2_CACHE_BYTES = 8 * 1024 * 1024;
/** Decompressed clusters kept, so 4 KiB..128 KiB sequential reads inflate each cluster once; <= 8 MiB. */
const INFLATED_CACHE_CLUSTERS = 4;

const MIN_CLUSTER_BITS = 9;   // 512 B
const MAX_CLUSTER_BITS = 21;  // 2 MiB, qemu's implementation limit
const V2_HEADER_LENGTH = 72;
const V3_HEADER_LENGTH = 104;
const SECTOR = 512;

/** Incompatible feature bits (header bytes 72..79). */
const INCOMPAT_DIRTY = 1n << 0n;
const INCOMPAT_CORRUPT = 1n << 1n;
const INCOMPAT_DATA_FILE = 1n << 2n;
const INCOMPAT_COMPRESSION = 1n << 3n;
const INCOMPAT_EXTENDED_L2 = 1n << 4n;
const INCOMPAT_KNOWN = (1n << 5n) - 1n;

/** L1/L2 entries are read as two big-endian u32 halves (hi = bits 32..63) to stay out of BigInt on the hot path. */
const L1_RESERVED_LO = 0x000001ff;     // bits 0..8
const L1_RESERVED_HI = 0x7f000000;     // bits 56..62
const L2_COMPRESSED_HI = 0x40000000;   // bit 62
const L2_ZERO_LO = 0x00000001;         // bit 0 (v3 standard clusters)
const L2_RESERVED_LO = 0x000001fe;     // bits 1..8
const L2_RESERVED_HI = 0x3f000000;     // bits 56..61
const OFFSET_HI = 0x00ffffff;          // bits 32..55 of a host offset
const OFFSET_LO = 0xfffffe00;          // bits 9..31 of a host offset
const TWO_32 = 0x100000000;

/** What one guest cluster maps to. */
const UNALLOCATED = 0;
const ZERO = 1;
const NORMAL = 2;
const COMPRESSED = 3;

/** One decoded L2 entry; `host` is the cluster (NORMAL) or compressed data (COMPRESSED) offset. */
interface Mapping {
  type: number;
  host: number;
  /** COMPRESSED only: bytes from `host` that may hold the compressed data. */
  compressedBytes: number;
}

interface Header {
  version: 2 | 3;
  clusterBits: number;
  size: number;
  l1Size: number;
  l1Offset: number;
  warnings: string[];
}

/** True if the file starts with the qcow2 magic (reads 4 bytes at offset 0). */
export function isQcow2(fd: number): boolean {
  const b = Buffer.alloc(4);
  return fs.readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32BE(0) === QCOW2_MAGIC;
}

export class Qcow2Layer implements Layer {
  readonly version: 2 | 3;
  readonly clusterSize: number;
  readonly size: number;
  readonly allocatedBytes: number;
  readonly warnings: string[];

  private readonly l2Entries: number;
  private readonly compressedOffsetBits: number;
  private readonly l2Cache = new LRUCache<number, Buffer>({
    maxSize: L2_CACHE_BYTES,
    sizeCalculation: (t) => t.length,
  });
  private readonly inflated = new LRUCache<number, Buffer>({ max: INFLATED_CACHE_CLUSTERS });
  /** Scratch mappings reused by every lookup so reads allocate nothing. */
  private readonly m: Mapping = { type: UNALLOCATED, host: 0, compressedBytes: 0 };
  private readonly next: Mapping = { type: UNALLOCATED, host: 0, compressedBytes: 0 };
  private closed = false;

  private constructor(
    private readonly fd: number,
    readonly path: string,
    readonly name: string,
    private readonly fileSize: number,
    header: Header,
    /** Host offsets of the L2 tables covering the virtual size (0 = unallocated), validated at open. */
    private readonly l1: Float64Array,
    allocatedBytes: number,
  ) {
    this.version = header.version;
    this.clusterSize = 2 ** header.clusterBits;
    this.size = header.size;
    this.warnings = header.warnings;
    this.allocatedBytes = allocatedBytes;
    this.l2Entries = this.clusterSize / 8;
    this.compressedOffsetBits = 62 - (header.clusterBits - 8);
  }

  /**
   * Opens a qcow2 image on `fd` (opened read-only by the caller). The layer
   * owns `fd` once open returns and closes it in close(); if open throws,
   * the fd is still the caller's to close.
   */
  static open(fd: number, path: string, name: string): Qcow2Layer {
    let st: fs.Stats;
    try {
      st = fs.fstatSync(fd);
    } catch (e) {
      throw fsError(path, e, 'qcow2: stat');
    }
    const header = readHeader(fd, path, st.size);
    const l1 = readL1(fd, path, st.size, header);
    return new Qcow2Layer(fd, path, name, st.size, header, l1, st.blocks * 512);
  }

  blockStatus(offset: number, length: number): BlockStatus {
    const asked = Math.max(1, length);
    if (offset >= this.size) return { kind: 'zero', length: asked };
    const cs = this.clusterSize;
    const first = Math.floor(offset / cs);
    this.mapCluster(first, this.m);
    const kind = kindOf(this.m.type);
    const end = Math.min(this.runEnd(first + 1, kind) * cs, this.size);
    // Past the virtual size reads as zeros too, so a zero run reaching it covers the rest of the ask.
    const runEnd = kind === 'zero' && end === this.size ? Math.max(end, offset + asked) : end;
    return { kind, length: runEnd - offset };
  }

  read(buf: Buffer, bufOffset: number, length: number, position: number): void {
    const end = Math.min(position + length, this.size);
    this.walk(position, end, (pos, n, cluster, inCluster) => {
      const at = bufOffset + (pos - position);
      if (this.m.type === NORMAL) this.readHost(buf, at, n, this.m.host + inCluster);
      else if (this.m.type === COMPRESSED) this.inflatedCluster(cluster, this.m).copy(buf, at, inCluster, inCluster + n);
      else buf.fill(0, at, at + n);
    });
    if (end < position + length) buf.fill(0, bufOffset + Math.max(0, end - position), bufOffset + length); // past the virtual size
  }

  /** Standard clusters by host offset (host-contiguous ones as one piece); compressed ones only through read. */
  mapDirect(offset: number, length: number, each: DirectPiece): void {
    const end = Math.min(offset + length, this.size);
    this.walk(offset, end, (pos, n, _cluster, inCluster) => {
      if (this.m.type === NORMAL) each(pos, n, this.fd, this.m.host + inCluster - pos, this.fileSize);
      else each(pos, n, -1, 0, 0);
    });
    if (end < offset + length) each(Math.max(offset, end), offset + length - Math.max(offset, end), -1, 0, 0);
  }

  /**
   * Walks [from, end) (end within the virtual size) mapping by mapping: each
   * call sees `this.m` for `cluster`, and covers a whole run of
   * host-contiguous NORMAL clusters in one piece (one pread for many, with
   * 512 B clusters), else the rest of one cluster.
   */
  private walk(from: number, end: number, visit: (pos: number, n: number, cluster: number, inCluster: number) => void): void {
    const cs = this.clusterSize;
    for (let pos = from; pos < end;) {
      const cluster = Math.floor(pos / cs);
      const inCluster = pos - cluster * cs;
      this.mapCluster(cluster, this.m);
      const n = this.m.type === NORMAL
        ? this.normalRunBytes(cluster, this.m.host, inCluster + (end - pos)) - inCluster
        : Math.min(end - pos, cs - inCluster);
      visit(pos, n, cluster, inCluster);
      pos += n;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.l2Cache.clear();
    this.inflated.clear();
    fs.closeSync(this.fd);
  }

  /**
   * The first cluster at or after `from` whose kind differs from `kind` (or
   * the end of the image). Bounded work: it reads at most one L2 table and
   * steps over unallocated L1 entries (at most the L1 size, <= 4 Mi).
   */
  private runEnd(from: number, kind: RunKind): number {
    const last = Math.ceil(this.size / this.clusterSize);
    const firstTable = Math.floor((from - 1) / this.l2Entries);
    let loadedTable = this.l1[firstTable] !== 0 ? firstTable : -1; // the caller's cluster loaded it
    let c = from;
    while (c < last) {
      const l1Index = Math.floor(c / this.l2Entries);
      const tableEnd = Math.min((l1Index + 1) * this.l2Entries, last);
      if (this.l1[l1Index] === 0) {
        if (kind !== 'zero') return c;
        c = tableEnd;
        continue;
      }
      if (l1Index !== loadedTable) {
        if (loadedTable !== -1) return c;
        loadedTable = l1Index;
      }
      for (; c < tableEnd; c++) {
        this.mapCluster(c, this.next);
        if (kindOf(this.next.type) !== kind) return c;
      }
    }
    return last;
  }

  /** Bytes from the start of `cluster` that are NORMAL and host-contiguous with it, capped at `limit`. */
  private normalRunBytes(cluster: number, host: number, limit: number): number {
    const cs = this.clusterSize;
    let bytes = cs;
    while (bytes < limit) {
      this.mapCluster(cluster + bytes / cs, this.next);
      if (this.next.type !== NORMAL || this.next.host !== host + bytes) break;
      bytes += cs;
    }
    return Math.min(bytes, limit);
  }

  /** Reads host bytes; a data cluster running past the end of the file reads zeros there, as in qemu. */
  private readHost(buf: Buffer, at: number, n: number, hostPos: number): void {
    const got = readFully(this.fd, this.path, buf, at, n, hostPos);
    if (got < n) buf.fill(0, at + got, at + n);
  }

  /** Decodes the L2 entry of guest `cluster` into `out`. */
  private mapCluster(cluster: number, out: Mapping): void {
    const l1Index = Math.floor(cluster / this.l2Entries);
    const table = this.l2Table(l1Index);
    if (table === null) {
      out.type = UNALLOCATED;
      return;
    }
    const i = (cluster - l1Index * this.l2Entries) * 8;
    const hi = table.readUInt32BE(i);
    const lo = table.readUInt32BE(i + 4);
    if (hi & L2_COMPRESSED_HI) this.decodeCompressed(cluster, hi, lo, out);
    else this.decodeStandard(cluster, hi, lo, out);
  }

  private decodeStandard(cluster: number, hi: number, lo: number, out: Mapping): void {
    if (lo & L2_RESERVED_LO || hi & L2_RESERVED_HI) {
      throw this.badEntry(cluster, hi, lo, 'has reserved bits set');
    }
    const host = (hi & OFFSET_HI) * TWO_32 + ((lo & OFFSET_LO) >>> 0);
    if (lo & L2_ZERO_LO) {
      if (this.version === 2) throw this.badEntry(cluster, hi, lo, 'is a zero cluster in a version 2 image');
      out.type = ZERO;
    } else {
      out.type = host === 0 ? UNALLOCATED : NORMAL;
    }
    // qemu checks alignment for preallocated zero clusters too; only clusters we read must be in the file.
    if (host % this.clusterSize !== 0) throw this.badEntry(cluster, hi, lo, `has unaligned host offset ${hex(host)}`);
    if (out.type === NORMAL && host >= this.fileSize) {
      throw this.badEntry(cluster, hi, lo, `points at ${hex(host)}, beyond the end of the file (size ${this.fileSize})`);
    }
    out.host = host;
  }

  /** Compressed descriptor: bits 0..x-1 host offset, x..61 additional 512 B sectors, x = 62 - (cluster_bits - 8). */
  private decodeCompressed(cluster: number, hi: number, lo: number, out: Mapping): void {
    const hiOffsetBits = this.compressedOffsetBits - 32; // 17..29
    const offsetHi = hi & ((1 << hiOffsetBits) - 1);
    if (offsetHi >= 1 << 24) throw this.badEntry(cluster, hi, lo, 'has a compressed offset beyond 2^56');
    const host = offsetHi * TWO_32 + (lo >>> 0);
    if (host >= this.fileSize) {
      throw this.badEntry(cluster, hi, lo, `has compressed data at ${hex(host)}, beyond the end of the file (size ${this.fileSize})`);
    }
    const extraSectors = (hi & 0x3fffffff) >>> hiOffsetBits;
    out.type = COMPRESSED;
    out.host = host;
    out.compressedBytes = (extraSectors + 1) * SECTOR - (lo & (SECTOR - 1));
  }

  /** The decompressed bytes of a compressed guest cluster; costs up to 2 clusters read + 1 inflated. */
  private inflatedCluster(cluster: number, m: Mapping): Buffer {
    const hit = this.inflated.get(cluster);
    if (hit) return hit;
    // The last compressed cluster's sectors may run past the end of the file: read what exists.
    const n = Math.min(m.compressedBytes, this.fileSize - m.host);
    const src = Buffer.allocUnsafe(n);
    const got = readFully(this.fd, this.path, src, 0, n, m.host);
    const out = this.inflate(cluster, src.subarray(0, got), m.host);
    this.inflated.set(cluster, out);
    return out;
  }

  private inflate(cluster: number, src: Buffer, host: number): Buffer {
    const where = `compressed cluster for guest offset ${hex(cluster * this.clusterSize)} (at ${hex(host)})`;
    let out: Buffer;
    try {
      // Sync flush, like qemu: a stream that yields a full cluster is accepted even without its end marker.
      out = zlib.inflateRawSync(src, {
        maxOutputLength: this.clusterSize,
        finishFlush: zlib.constants.Z_SYNC_FLUSH,
      });
    } catch (e) {
      throw new LayerReadError(this.path, `qcow2: ${where} does not decompress: ${(e as Error).message}`);
    }
    if (out.length !== this.clusterSize) {
      throw new LayerReadError(this.path, `qcow2: ${where} decompresses to ${out.length} bytes, not ${this.clusterSize}`);
    }
    return out;
  }

  /** The L2 table under L1 entry `l1Index`, or null when unallocated. */
  private l2Table(l1Index: number): Buffer | null {
    const host = this.l1[l1Index];
    if (host === 0) return null;
    let table = this.l2Cache.get(l1Index);
    if (table === undefined) {
      table = Buffer.allocUnsafe(this.clusterSize);
      const got = readFully(this.fd, this.path, table, 0, table.length, host);
      if (got !== table.length) {
        throw new LayerReadError(this.path, `qcow2: L2 table at ${hex(host)} is cut short by the end of the file`);
      }
      this.l2Cache.set(l1Index, table);
    }
    return table;
  }

  private badEntry(cluster: number, hi: number, lo: number, what: string): LayerReadError {
    const entry = hi.toString(16).padStart(8, '0') + lo.toString(16).padStart(8, '0');
    return new LayerReadError(
      this.path,
      `qcow2: L2 entry 0x${entry} for guest offset ${hex(cluster * this.clusterSize)} ${what}`,
    );
  }
}

function kindOf(type: number): RunKind {
  return type === NORMAL || type === COMPRESSED ? 'data' : 'zero';
}

// ---------------------------------------------------------------------------
// Open-time checks: header, features, L1 table.

/** Reads and validates the header; throws ChainfsError naming the first problem. */
function readHeader(fd: number, path: string, fileSize: number): Header {
  const bad = (what: string) => new ChainfsError(path, `qcow2: ${what}`);
  if (fileSize < V2_HEADER_LENGTH) throw bad(`file is too short for a header (${fileSize} bytes)`);
  // Bytes 0..104: everything we use, up to and including compression_type.
  const h = Buffer.alloc(V3_HEADER_LENGTH + 8);
  readFully(fd, path, h, 0, Math.min(h.length, fileSize), 0);
  if (h.readUInt32BE(0) !== QCOW2_MAGIC) throw bad('not a qcow2 image (bad magic)');
  const version = h.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw bad(`unsupported version ${version} (only 2 and 3)`);
  const clusterBits = h.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw bad(`cluster_bits ${clusterBits} is out of range (${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}: 512 B..2 MiB clusters)`);
  }
  const warnings = version === 3 ? checkV3Fields(h, path, fileSize, 2 ** clusterBits) : [];
  const crypt = h.readUInt32BE(32);
  if (crypt !== 0) throw bad(`image is encrypted (crypt_method ${crypt}); encrypted images are not supported`);
  const backing = h.readBigUInt64BE(8);
  if (backing !== 0n) {
    throw bad(`image has a backing file of its own (backing_file_offset 0x${backing.toString(16)}); a backing image must stand alone`);
  }
  const size = safeNumber(h.readBigUInt64BE(24), path, 'virtual size');
  if (size % SECTOR !== 0) throw bad(`virtual size ${size} is not a multiple of ${SECTOR}`);
  const l1Offset = safeNumber(h.readBigUInt64BE(40), path, 'L1 table offset');
  return { version, clusterBits, size, l1Size: h.readUInt32BE(36), l1Offset, warnings };
}

/** Header length, feature bits and compression type (v3 only); returns warnings for readable-but-suspect images. */
function checkV3Fields(h: Buffer, path: string, fileSize: number, clusterSize: number): string[] {
  const bad = (what: string) => new ChainfsError(path, `qcow2: ${what}`);
  if (fileSize < V3_HEADER_LENGTH) throw bad(`file is too short for a version 3 header (${fileSize} bytes)`);
  const headerLength = h.readUInt32BE(100);
  if (headerLength < V3_HEADER_LENGTH) throw bad(`header_length ${headerLength} is below the minimum of ${V3_HEADER_LENGTH}`);
  if (headerLength > clusterSize || headerLength > fileSize) {
    throw bad(`header_length ${headerLength} exceeds the first cluster or the file`);
  }
  const incompat = h.readBigUInt64BE(72);
  if (incompat & INCOMPAT_DATA_FILE) throw bad('image uses an external data file (incompatible feature bit 2); not supported');
  if (incompat & INCOMPAT_EXTENDED_L2) throw bad('image uses extended L2 entries (incompatible feature bit 4); not supported');
  const compressionType = headerLength > V3_HEADER_LENGTH ? h[V3_HEADER_LENGTH] : 0;
  if (incompat & INCOMPAT_COMPRESSION || compressionType !== 0) {
    throw bad(`image uses a compression type other than deflate (compression_type ${compressionType}); not supported`);
  }
  const unknown = incompat & ~INCOMPAT_KNOWN;
  if (unknown !== 0n) throw bad(`image has unknown incompatible feature bits 0x${unknown.toString(16)}`);
  const warnings: string[] = [];
  if (incompat & INCOMPAT_DIRTY) warnings.push('qcow2: dirty bit set (not closed cleanly; refcounts may be stale, mapped data is read as is)');
  if (incompat & INCOMPAT_CORRUPT) warnings.push('qcow2: corrupt bit set (qemu found an inconsistency; reading anyway, read-only)');
  return warnings;
}

/**
 * Reads the L1 entries that cover the virtual size (at most 32 MiB, qemu's
 * limit) and checks each points at a whole, aligned cluster inside the file.
 */
function readL1(fd: number, path: string, fileSize: number, h: Header): Float64Array {
  const bad = (what: string) => new ChainfsError(path, `qcow2: ${what}`);
  const clusterSize = 2 ** h.clusterBits;
  const coverage = clusterSize * (clusterSize / 8); // guest bytes per L2 table
  const needed = Math.ceil(h.size / coverage);
  if (h.l1Size > MAX_L1_BYTES / 8) {
    throw bad(`L1 table has ${h.l1Size} entries, more than qemu's limit of ${MAX_L1_BYTES / 8}`);
  }
  if (h.l1Size < needed) throw bad(`L1 table has ${h.l1Size} entries, too few for the virtual size ${h.size} (needs ${needed})`);
  if (h.l1Offset % clusterSize !== 0) throw bad(`L1 table offset ${hex(h.l1Offset)} is not cluster-aligned`);
  if (h.l1Offset + h.l1Size * 8 > fileSize) {
    throw bad(`L1 table at ${hex(h.l1Offset)} (${h.l1Size * 8} bytes) is beyond the end of the file (size ${fileSize})`);
  }
  const raw = Buffer.allocUnsafe(needed * 8);
  if (readFully(fd, path, raw, 0, raw.length, h.l1Offset) !== raw.length) throw bad('L1 table is cut short');
  const l1 = new Float64Array(needed);
  for (let i = 0; i < needed; i++) {
    l1[i] = checkL1Entry(raw.readUInt32BE(i * 8), raw.readUInt32BE(i * 8 + 4), i, clusterSize, fileSize, bad);
  }
  return l1;
}

function checkL1Entry(
  hi: number, lo: number, index: number, clusterSize: number, fileSize: number,
  bad: (what: string) => ChainfsError,
): number {
  const what = `L1 entry ${index} (0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')})`;
  if (lo & L1_RESERVED_LO || hi & L1_RESERVED_HI) throw bad(`${what} has reserved bits set`);
  const host = (hi & OFFSET_HI) * TWO_32 + ((lo & OFFSET_LO) >>> 0);
  if (host === 0) return 0;
  if (host % clusterSize !== 0) throw bad(`${what}: L2 table offset ${hex(host)} is not cluster-aligned`);
  if (host + clusterSize > fileSize) {
    throw bad(`${what}: L2 table at ${hex(host)} is beyond the end of the file (size ${fileSize})`);
  }
  return host;
}

// ---------------------------------------------------------------------------

/** preads until `n` bytes or end of file; returns the bytes read. I/O errors become LayerReadError. */
function readFully(fd: number, path: string, buf: Buffer, at: number, n: number, pos: number): number {
  return preadUpTo(fd, buf, at, n, pos, (e) =>
    new LayerReadError(path, `qcow2: reading ${n} bytes at ${hex(pos)}: ${fsError('', e).message}`)); // '': the reason alone
}

function safeNumber(v: bigint, path: string, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ChainfsError(path, `qcow2: ${what} 0x${v.toString(16)} is too large`);
  return Number(v);
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
