/**
 * One blob, loaded from its metadata: flags, xattrs, and the cluster map.
 *
 * SPDK: blobstore.c `blob_load_cpl` (follow `next`, every page's CRC, id and
 * sequence number), `blob_parse_page` (descriptors), `blob_deserialize_xattr`,
 * `blob_load_cpl_extents_cpl` (extent table: an allocated entry is one
 * extent page of up to SPDK_EXTENTS_PER_EP = 512 clusters, a 0 entry is that
 * many unallocated clusters of a thin blob). Flags: blobstore.h
 * SPDK_BLOB_INVALID_FLAGS_MASK (an unknown bit makes SPDK refuse the blob).
 *
 * A blob that cannot be loaded is returned with its `problem` (one line):
 * the damage stays with it and with the lvols that need it.
 */
import { ClusterMap } from './cluster-map';
import {
  DESC_EXTENT_PAGE, DESC_EXTENT_RLE, DESC_EXTENT_TABLE, DESC_FLAGS, DESC_PADDING, DESC_XATTR, DESC_XATTR_INTERNAL,
  NO_NEXT, descriptors, extentPageProblem, pageHeader, pageOfBlobId,
} from './md-page';

export const FLAG_THIN_PROV = 1;
export const FLAG_INTERNAL_XATTR = 2;
export const FLAG_EXTENT_TABLE = 4;
export const FLAG_EXTERNAL_SNAPSHOT = 8;
const KNOWN_INVALID_FLAGS = 15n;
/** data_ro_flags: SPDK_BLOB_READ_ONLY (snapshots). */
export const FLAG_READ_ONLY = 1;
/** Clusters an extent page holds (SPDK_EXTENTS_PER_EP for 4 KiB pages). */
export const EXTENTS_PER_EP = 512;
/**
 * The most clusters a blob may claim: 2^32 (an extent table's count is a
 * u64, a cluster index a u32); 4 PiB at 1 MiB. Sparse maps make a large
 * thin size cheap, so this only rejects impossible numbers.
 */
const MAX_CLUSTERS = 2 ** 32;

export interface Blob {
  id: number;
  /** Md pages of its chain (indexes in the md region), first page first. */
  pages: number[];
  /** Md pages of its extent pages. */
  extentPages: number[];
  invalidFlags: number;
  dataRoFlags: number;
  mdRoFlags: number;
  thin: boolean;
  readOnly: boolean;
  usesExtentTable: boolean;
  /** Public xattrs (raw values). */
  xattrs: Map<string, Buffer>;
  /** Internal xattrs (`SNAP`, `SNAPTMP`, `SNAPRM`, `EXTSNAP`). */
  internal: Map<string, Buffer>;
  /** Size in clusters. */
  numClusters: number;
  /** Device cluster of each of the blob's clusters, 0 = unallocated. */
  clusters: ClusterMap;
  allocatedClusters: number;
  /** Why the blob cannot be read, or undefined. */
  problem?: string;
}

/** Reads md page `index` (4 KiB, within the md region) or throws a one-line Error. */
export type PageReader = (index: number) => Buffer;

/** Loads blob `id` whose first page is valid (the caller checked). Never throws for bad metadata. */
export function loadBlob(id: number, readPage: PageReader, mdLen: number): Blob {
  const blob: Blob = {
    id, pages: [], extentPages: [], invalidFlags: 0, dataRoFlags: 0, mdRoFlags: 0, thin: false, readOnly: false,
    usesExtentTable: false, xattrs: new Map(), internal: new Map(), numClusters: 0, clusters: new ClusterMap(0), allocatedClusters: 0,
  };
  try {
    parseChain(blob, readPage, mdLen);
  } catch (e) {
    blob.problem = (e as Error).message;
    if (!blob.xattrs.has('name')) salvageName(blob, readPage);
  }
  return blob;
}

/**
 * For a blob that failed to load: its `name` xattr from its first page, if
 * that much parses, so that messages and the tree can say which lvol is
 * damaged. The blob stays unreadable.
 */
function salvageName(blob: Blob, readPage: PageReader): void {
  try {
    const buf = readPage(pageOfBlobId(blob.id));
    const descs = descriptors(buf);
    if (typeof descs === 'string') return;
    for (const d of descs) {
      if (d.type !== DESC_XATTR || d.length < 4) continue;
      const nameLen = buf.readUInt16LE(d.start);
      if (buf.toString('latin1', d.start + 4, d.start + 4 + nameLen) === 'name') parseXattr(blob.xattrs, buf, d.start, d.length, 0);
    }
  } catch {
    // nothing to salvage
  }
}

class BlobError extends Error {}

function parseChain(blob: Blob, readPage: PageReader, mdLen: number): void {
  const rle: number[] = [];
  const table: number[] = [];
  let tableClusters = -1;
  let sawRle = false;
  let page = pageOfBlobId(blob.id);
  const seen = new Set<number>();
  for (let seq = 0; ; seq++) {
    if (page < 0 || page >= mdLen) throw new BlobError(`metadata page ${page} is outside the metadata region (${mdLen} pages)`);
    if (seen.has(page)) throw new BlobError(`metadata chain loops back to page ${page}`);
    seen.add(page);
    const buf = readPage(page);
    const h = pageHeader(buf);
    if (!h.crcOk) throw new BlobError(`metadata page ${page} checksum mismatch`);
    if (h.id !== blob.id) throw new BlobError(`metadata page ${page} belongs to blob 0x${h.id.toString(16)}`);
    if (h.sequenceNum !== seq) throw new BlobError(`metadata page ${page} has sequence number ${h.sequenceNum}, expected ${seq}`);
    blob.pages.push(page);
    const descs = descriptors(buf);
    if (typeof descs === 'string') throw new BlobError(`metadata page ${page}: ${descs}`);
    for (const d of descs) {
      switch (d.type) {
        case DESC_PADDING: break;
        case DESC_FLAGS: parseFlags(blob, buf, d.start, d.length, page); break;
        case DESC_XATTR:
        case DESC_XATTR_INTERNAL: parseXattr(d.type === DESC_XATTR ? blob.xattrs : blob.internal, buf, d.start, d.length, page); break;
        case DESC_EXTENT_RLE: {
          if (tableClusters >= 0) throw new BlobError(`metadata page ${page} mixes EXTENT_RLE and EXTENT_TABLE`);
          if (d.length === 0 || d.length % 8 !== 0) throw new BlobError(`metadata page ${page}: EXTENT_RLE of ${d.length} bytes`);
          sawRle = true;
          for (let p = d.start; p < d.start + d.length; p += 8) rle.push(buf.readUInt32LE(p), buf.readUInt32LE(p + 4));
          break;
        }
        case DESC_EXTENT_TABLE: {
          if (sawRle) throw new BlobError(`metadata page ${page} mixes EXTENT_RLE and EXTENT_TABLE`);
          if (d.length < 8 || (d.length - 8) % 8 !== 0) throw new BlobError(`metadata page ${page}: EXTENT_TABLE of ${d.length} bytes`);
          const n = buf.readBigUInt64LE(d.start);
          if (n > BigInt(MAX_CLUSTERS)) throw new BlobError(`metadata page ${page}: EXTENT_TABLE of ${n} clusters (more than ${MAX_CLUSTERS})`);
          if (tableClusters < 0) tableClusters = Number(n);
          for (let p = d.start + 8; p < d.start + d.length; p += 8) table.push(buf.readUInt32LE(p), buf.readUInt32LE(p + 4));
          break;
        }
        case DESC_EXTENT_PAGE: throw new BlobError(`metadata page ${page}: EXTENT_PAGE descriptor in a blob's own metadata`);
        default: throw new BlobError(`metadata page ${page}: unknown descriptor type ${d.type} (a newer SPDK format?); refusing to guess`);
      }
    }
    if (h.next === NO_NEXT) break;
    page = h.next;
  }
  if (blob.invalidFlags & FLAG_EXTERNAL_SNAPSHOT && !blob.internal.has('EXTSNAP')) blob.problem = 'external-snapshot flag without an EXTSNAP xattr';
  if (sawRle) clustersFromRle(blob, rle);
  else if (tableClusters >= 0) clustersFromTable(blob, table, tableClusters, readPage, mdLen);
}

function parseFlags(blob: Blob, buf: Buffer, start: number, length: number, page: number): void {
  if (length !== 24) throw new BlobError(`metadata page ${page}: FLAGS descriptor of ${length} bytes`);
  const invalid = buf.readBigUInt64LE(start);
  if ((invalid & ~KNOWN_INVALID_FLAGS) !== 0n) {
    throw new BlobError(`unknown invalid_flags 0x${invalid.toString(16)} (a newer SPDK feature; SPDK itself refuses to open such a blob)`);
  }
  const dataRo = buf.readBigUInt64LE(start + 8);
  const mdRo = buf.readBigUInt64LE(start + 16);
  blob.invalidFlags = Number(invalid);
  blob.dataRoFlags = Number(dataRo & 0xffffffffn);
  blob.mdRoFlags = Number(mdRo & 0xffffffffn);
  blob.thin = (blob.invalidFlags & FLAG_THIN_PROV) !== 0;
  // Any data_ro bit, known or not, makes the blob read-only (blob_parse_page).
  blob.readOnly = dataRo !== 0n;
}

function parseXattr(into: Map<string, Buffer>, buf: Buffer, start: number, length: number, page: number): void {
  if (length < 4) throw new BlobError(`metadata page ${page}: xattr descriptor of ${length} bytes`);
  const nameLen = buf.readUInt16LE(start);
  const valueLen = buf.readUInt16LE(start + 2);
  if (4 + nameLen + valueLen !== length) throw new BlobError(`metadata page ${page}: xattr lengths (${nameLen}+${valueLen}) disagree with its descriptor (${length})`);
  const name = buf.toString('latin1', start + 4, start + 4 + nameLen);
  into.set(name, Buffer.from(buf.subarray(start + 4 + nameLen, start + 4 + nameLen + valueLen)));
}

function clustersFromRle(blob: Blob, rle: number[]): void {
  let total = 0;
  for (let i = 0; i < rle.length; i += 2) {
    const [c, n] = [rle[i], rle[i + 1]];
    if (c !== 0 && c + n > 2 ** 32) throw new BlobError(`EXTENT_RLE run ${c}+${n} is out of range`);
    if (c === 0 && !blob.thin) throw new BlobError('unallocated cluster in a thick-provisioned blob');
    total += n;
  }
  if (total > MAX_CLUSTERS) throw new BlobError(`EXTENT_RLE describes ${total} clusters (more than ${MAX_CLUSTERS})`);
  const map = new ClusterMap(total);
  let at = 0;
  for (let i = 0; i < rle.length; i += 2) {
    const [c, n] = [rle[i], rle[i + 1]];
    if (c !== 0) for (let j = 0; j < n; j++) map.set(at + j, c + j);
    at += n;
  }
  blob.numClusters = total;
  blob.clusters = map;
  blob.allocatedClusters = map.allocated;
}

function clustersFromTable(blob: Blob, table: number[], numClusters: number, readPage: PageReader, mdLen: number): void {
  blob.usesExtentTable = true;
  const clusters = new ClusterMap(numClusters);
  let at = 0;
  for (let i = 0; i < table.length && at < numClusters; i += 2) {
    const [idx, n] = [table[i], table[i + 1]];
    if (idx === 0) {
      if (!blob.thin) throw new BlobError('unallocated extent page in a thick-provisioned blob');
      at = Math.min(numClusters, at + n * EXTENTS_PER_EP);
      continue;
    }
    if (n !== 1) throw new BlobError(`extent table entry for page ${idx} counts ${n} pages (must be 1)`);
    if (idx >= mdLen) throw new BlobError(`extent page ${idx} is outside the metadata region (${mdLen} pages)`);
    const buf = readPage(idx);
    const bad = extentPageProblem(buf);
    if (bad) throw new BlobError(`extent page ${idx}: ${bad}`);
    // No id check: a snapshot takes over the extent pages its origin wrote,
    // which keep the origin's id (SPDK does not check it either).
    const length = buf.readUInt32LE(17);
    const start = buf.readUInt32LE(21);
    const count = (length - 4) / 4;
    if (length <= 4 || !Number.isInteger(count)) throw new BlobError(`extent page ${idx}: EXTENT_PAGE of ${length} bytes`);
    if (start !== at) throw new BlobError(`extent page ${idx} starts at cluster ${start}, expected ${at}`);
    if (start + count > numClusters) throw new BlobError(`extent page ${idx} maps clusters ${start}..${start + count - 1}, past the blob's ${numClusters}`);
    for (let k = 0; k < count; k++) {
      const c = buf.readUInt32LE(25 + 4 * k);
      if (c === 0 && !blob.thin) throw new BlobError('unallocated cluster in a thick-provisioned blob');
      if (c !== 0) clusters.set(at + k, c);
    }
    blob.extentPages.push(idx);
    at += count;
  }
  if (at < numClusters && !blob.thin) throw new BlobError(`extent table covers ${at} of ${numClusters} clusters`);
  blob.numClusters = numClusters;
  blob.clusters = clusters;
  blob.allocatedClusters = clusters.allocated;
}
