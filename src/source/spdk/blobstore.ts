/**
 * A blobstore on a device or image, read-only: the super block, which blobs
 * are live, and each blob's metadata.
 *
 * Which blobs are live: after a clean unload (`clean` = 1) the used-blobid
 * mask says (as `bs_load_read_used_pages` and on, blobstore.c); otherwise
 * the masks are stale (SPDK writes them only at unload, and a crashed store
 * has them all zero) and, as SPDK's recovery does (`bs_recover`,
 * `bs_load_replay_md_cpl`), every page of the metadata region is examined:
 * a live blob's first page has a valid CRC, sequence 0 and id 1<<32 | its
 * index (a deleted blob's first page is zeroed, `blob_persist_zero_pages`).
 *
 * Cost: the clean path reads the mask and each blob's pages (a few KiB per
 * blob). A scan reads the whole metadata region, one 4 KiB page per cluster
 * (0.4 % of the disk: 4 GiB for 1 TiB), skipping holes of an image file.
 */
import { native } from '../../native';
import { preadUpTo } from '../../layer/file-layer';
import { ChainfsError } from '../../errors';
import { loadBlob, type Blob } from './blob';
import { blobIdHex, blobIdOfPage, isFirstPage } from './md-page';
import { MD_PAGE_STRUCT_SIZE, SUPER_BLOCK_SIZE, parseSuperBlock, type SuperBlock } from './super-block';

/** SPDK_MD_MASK_TYPE_USED_CLUSTERS / _USED_BLOBIDS (blobstore.h `struct spdk_bs_md_mask`: type u8, length u32 in bits, bitmap). */
const MASK_TYPE_USED_CLUSTERS = 1;
const MASK_TYPE_USED_BLOBIDS = 2;
/** Md pages read at once by a scan (1 MiB with 4 KiB pages). */
const SCAN_PAGES = 256;

export interface Blobstore {
  path: string;
  sb: SuperBlock;
  deviceSize: number;
  /** Clusters of the blobstore (`size` / `cluster_size`). */
  totalClusters: number;
  /** The first cluster past the metadata region (data clusters start here). */
  firstDataCluster: number;
  /**
   * Clusters of the blobstore that are free (what SPDK reports,
   * `spdk_bs_free_cluster_count`): after a clean unload, those clear in the
   * used-cluster mask (`bs_load_used_clusters_cpl`, blobstore.c); else (or
   * when the mask is unusable) those outside the metadata that no live blob
   * claims, as SPDK's recovery counts them (`bs_load_replay_md_cpl`). A
   * cluster a blob claims stays used when it lies past the end of a
   * truncated image: the copy lost its data, the blobstore did not free it.
   */
  freeClusters: number;
  /** How `freeClusters` was counted; `blobs-partial`: some blob's metadata is unreadable, so its clusters count as free (an upper bound). */
  freeFrom: 'cluster-mask' | 'blobs' | 'blobs-partial';
  /** How the live blobs were found. */
  enumeration: 'blobid-mask' | 'metadata-scan';
  /** Live blobs by id (the super blob included), loaded; bad ones carry `problem`. */
  blobs: Map<number, Blob>;
  warnings: string[];
}

/**
 * Reads the blobstore on `fd` (`path`, `deviceSize` bytes). Throws
 * ChainfsError when the super block is unusable; damage below it stays with
 * the blobs it touches.
 */
export function readBlobstore(fd: number, path: string, deviceSize: number, isFile: boolean): Blobstore {
  const head = Buffer.alloc(SUPER_BLOCK_SIZE);
  const got = preadUpTo(fd, head, 0, SUPER_BLOCK_SIZE, 0, (e) => ioError(path, e, 0));
  const sb = parseSuperBlock(head.subarray(0, got), path, deviceSize);
  const warnings: string[] = [];
  if (sb.size > deviceSize) {
    warnings.push(`${path}: the image (${deviceSize} bytes) is shorter than its blobstore (${sb.size} bytes): a truncated copy? Data past its end is unreadable`);
  }
  const readPage = (index: number): Buffer => {
    const pos = (sb.mdStart + index) * sb.mdPageSize;
    const buf = Buffer.alloc(MD_PAGE_STRUCT_SIZE);
    const n = preadUpTo(fd, buf, 0, MD_PAGE_STRUCT_SIZE, pos, (e) => ioError(path, e, pos));
    if (n < MD_PAGE_STRUCT_SIZE) throw new Error(`metadata page ${index} lies past the end of the image (truncated?)`);
    return buf;
  };
  let ids: number[] | undefined;
  let enumeration: Blobstore['enumeration'] = 'metadata-scan';
  if (sb.clean === 1 && sb.usedBlobidMask.len > 0) {
    ids = blobidsFromMask(fd, path, sb, warnings);
    if (ids) enumeration = 'blobid-mask';
  }
  ids ??= scanFirstPages(fd, path, sb, deviceSize, isFile);
  const blobs = new Map<number, Blob>();
  for (const id of ids) {
    blobs.set(id, loadBlob(id, readPage, sb.mdLen));
  }
  const pagesPerCluster = sb.clusterSize / sb.mdPageSize;
  const totalClusters = Math.floor(sb.size / sb.clusterSize);
  const firstDataCluster = Math.ceil((sb.mdStart + sb.mdLen) / pagesPerCluster);
  const metadataLost = [...blobs.values()].some((b) => b.problem !== undefined);
  let freeClusters = checkClusters(blobs, totalClusters, firstDataCluster, Math.floor(deviceSize / sb.clusterSize), sb.clusterSize, path, warnings);
  let freeFrom: Blobstore['freeFrom'] = metadataLost ? 'blobs-partial' : 'blobs';
  const usedInMask = sb.clean === 1 ? usedClustersFromMask(fd, path, sb, totalClusters) : undefined;
  if (usedInMask !== undefined) {
    freeClusters = Math.max(0, totalClusters - usedInMask);
    freeFrom = 'cluster-mask';
  }
  return { path, sb, deviceSize, totalClusters, firstDataCluster, freeClusters, freeFrom, enumeration, blobs, warnings };
}

/** Blob ids from the used-blobid mask, or undefined (with a warning) when the mask is unusable. */
function blobidsFromMask(fd: number, path: string, sb: SuperBlock, warnings: string[]): number[] | undefined {
  const bytes = sb.usedBlobidMask.len * sb.mdPageSize;
  const buf = Buffer.alloc(bytes);
  const pos = sb.usedBlobidMask.start * sb.mdPageSize;
  const n = preadUpTo(fd, buf, 0, bytes, pos, (e) => ioError(path, e, pos));
  const bits = n >= 5 ? buf.readUInt32LE(1) : -1;
  if (n < bytes || buf[0] !== MASK_TYPE_USED_BLOBIDS || bits !== sb.mdLen || 5 + Math.ceil(bits / 8) > bytes) {
    warnings.push(`${path}: the used-blobid mask is not usable (type ${buf[0]}, ${bits} bits for ${sb.mdLen} md pages); scanning the metadata region instead`);
    return undefined;
  }
  const ids: number[] = [];
  for (let i = 0; i < bits; i++) if (buf[5 + (i >> 3)] & (1 << (i & 7))) ids.push(blobIdOfPage(i));
  return ids;
}

/**
 * Set bits of the used-cluster mask (the metadata clusters included, as
 * `bs_init` claims them), or undefined when the mask is unusable (wrong
 * type or length, past the end of the image).
 */
function usedClustersFromMask(fd: number, path: string, sb: SuperBlock, total: number): number | undefined {
  const bytes = sb.usedClusterMask.len * sb.mdPageSize;
  if (bytes === 0) return undefined;
  const buf = Buffer.alloc(bytes);
  const pos = sb.usedClusterMask.start * sb.mdPageSize;
  const n = preadUpTo(fd, buf, 0, bytes, pos, (e) => ioError(path, e, pos));
  const bits = n >= 5 ? buf.readUInt32LE(1) : -1;
  if (n < bytes || buf[0] !== MASK_TYPE_USED_CLUSTERS || bits !== total || 5 + Math.ceil(bits / 8) > bytes) return undefined;
  let used = 0;
  for (let i = 0; i < bits; i++) if (buf[5 + (i >> 3)] & (1 << (i & 7))) used++;
  return used;
}

/** Blob ids of every valid first page in the metadata region (SPDK's recovery scan). */
function scanFirstPages(fd: number, path: string, sb: SuperBlock, deviceSize: number, isFile: boolean): number[] {
  const ids: number[] = [];
  const stride = sb.mdPageSize;
  const buf = Buffer.alloc(SCAN_PAGES * stride);
  const mdEnd = Math.min(sb.mdStart + sb.mdLen, Math.floor(deviceSize / stride));
  for (let page = sb.mdStart; page < mdEnd;) {
    if (isFile) {
      // Holes of a sparse image hold no page (zeros are never a valid page).
      const data = native.seekData(fd, page * stride);
      if (data < 0) break;
      const first = Math.floor(data / stride);
      if (first > page) { page = first; continue; }
    }
    const count = Math.min(SCAN_PAGES, mdEnd - page);
    const pos = page * stride;
    const n = preadUpTo(fd, buf, 0, count * stride, pos, (e) => ioError(path, e, pos));
    const whole = Math.floor(n / stride);
    for (let k = 0; k < whole; k++) {
      const index = page + k - sb.mdStart;
      if (isFirstPage(buf, k * stride, index)) ids.push(blobIdOfPage(index));
    }
    if (whole < count) break;
    page += count;
  }
  return ids;
}

/**
 * Bounds-checks every blob's clusters (inside the blobstore, past the
 * metadata, within the device) and counts the free ones. A blob with a bad
 * cluster gets a `problem` (its first bad cluster); a cluster claimed twice
 * is a warning. Every claimed cluster of the blobstore counts as used, also
 * one past the end of a truncated image and those after a blob's bad one.
 */
function checkClusters(blobs: Map<number, Blob>, total: number, firstData: number, onDevice: number, cs: number,
  path: string, warnings: string[]): number {
  const owner = new Float64Array(total);
  let used = 0;
  let shared = 0;
  for (const b of blobs.values()) {
    if (b.problem) continue;
    if (b.numClusters * cs > Number.MAX_SAFE_INTEGER) {
      b.problem = `size of ${b.numClusters} clusters of ${cs} bytes is out of range`;
      continue;
    }
    for (const [i, c] of b.clusters.entries()) {
      if (c < firstData || c >= total) {
        b.problem ??= `cluster ${i} maps to device cluster ${c}, outside the data clusters ${firstData}..${total - 1}`;
        continue;
      }
      if (c >= onDevice) b.problem ??= `cluster ${i} maps to device cluster ${c} at byte ${c * cs}, past the end of the image (${onDevice} whole clusters): truncated?`;
      if (owner[c] === 0) { owner[c] = b.id; used++; }
      else if (owner[c] !== b.id && shared++ < 3) warnings.push(`${path}: device cluster ${c} is claimed by blobs ${blobIdHex(owner[c])} and ${blobIdHex(b.id)}`);
    }
  }
  return Math.max(0, total - firstData - used);
}

function ioError(path: string, e: unknown, at: number): ChainfsError {
  return new ChainfsError(path, `read at byte ${at} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'EIO');
}

