/**
 * Metadata pages and their descriptors.
 *
 * SPDK: lib/blob/blobstore.h `struct spdk_blob_md_page` (id u64 @0,
 * sequence_num u32 @8, descriptors[4072] @16, next u32 @4088, crc u32 @4092)
 * and the descriptor structs (a header of type u8 + length u32, then
 * `length` bytes; type 0 with length 0 ends the page); parsing as
 * blobstore.c `blob_parse_page`, extent pages as
 * `bs_load_cur_extent_page_valid`.
 */
import { pageCrcOk } from './crc32c';

/** `next` of the last page of a chain (SPDK_INVALID_MD_PAGE). */
export const NO_NEXT = 0xffffffff;
const DESC_START = 16;
const DESC_END = 16 + 4072;
const HEADER = 5;

export const DESC_PADDING = 0;
export const DESC_EXTENT_RLE = 1;
export const DESC_XATTR = 2;
export const DESC_FLAGS = 3;
export const DESC_XATTR_INTERNAL = 4;
export const DESC_EXTENT_TABLE = 5;
export const DESC_EXTENT_PAGE = 6;

/** Blob id of the blob whose first md page is `page` (`bs_page_to_blobid`: 1<<32 | page). */
export function blobIdOfPage(page: number): number {
  return 2 ** 32 + page;
}

/** The first md page of blob `id`, or -1 when `id` is not a blob id (`bs_blobid_to_page`). */
export function pageOfBlobId(id: number): number {
  return id >= 2 ** 32 && id < 2 ** 33 ? id - 2 ** 32 : -1;
}

export function blobIdHex(id: number): string {
  return `0x${id.toString(16)}`;
}

/** The fixed header of a page at buf[at, at+4096). */
export interface PageHeader {
  id: number;
  sequenceNum: number;
  next: number;
  crcOk: boolean;
}

export function pageHeader(buf: Buffer, at = 0): PageHeader {
  const id = buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * 2 ** 32;
  return { id, sequenceNum: buf.readUInt32LE(at + 8), next: buf.readUInt32LE(at + 4088), crcOk: pageCrcOk(buf, at) };
}

/**
 * Whether the page at `at` is the valid first page of a live blob whose
 * first page is md page `index`: CRC, sequence 0 and id == 1<<32 | index.
 * Cheap checks first (most pages of a scan are zero or not first pages).
 * As SPDK's recovery (`bs_load_cur_md_page_valid`, `bs_load_replay_md_cpl`).
 */
export function isFirstPage(buf: Buffer, at: number, index: number): boolean {
  if (buf.readUInt32LE(at + 4) !== 1 || buf.readUInt32LE(at) !== index || buf.readUInt32LE(at + 8) !== 0) return false;
  return pageCrcOk(buf, at);
}

/** One descriptor: its type and its body buf[start, start+length). */
export interface Descriptor {
  type: number;
  start: number;
  length: number;
}

/**
 * The descriptors of the page at buf[at, at+4096), in order, up to the
 * terminating (0, 0) or the end of the area; a descriptor whose body would
 * run past the area is an error (returned as a string).
 */
export function descriptors(buf: Buffer, at = 0): Descriptor[] | string {
  const out: Descriptor[] = [];
  let cur = at + DESC_START;
  const end = at + DESC_END;
  while (cur + HEADER <= end) {
    const type = buf[cur];
    const length = buf.readUInt32LE(cur + 1);
    if (type === DESC_PADDING && length === 0) break;
    if (length > end - cur - HEADER) return `descriptor of type ${type} at byte ${cur - at} claims ${length} bytes, past the end of the page`;
    out.push({ type, start: cur + HEADER, length });
    cur += HEADER + length;
  }
  return out;
}

/**
 * Whether the page at `at` is a valid extent page: CRC, sequence 0, one
 * EXTENT_PAGE descriptor alone in the page (`bs_load_cur_extent_page_valid`),
 * and no `next`.
 */
export function extentPageProblem(buf: Buffer, at = 0): string | undefined {
  if (!pageCrcOk(buf, at)) return 'checksum mismatch';
  if (buf.readUInt32LE(at + 8) !== 0) return 'sequence number is not 0';
  if (buf.readUInt32LE(at + 4088) !== NO_NEXT) return 'has a next page';
  const d = descriptors(buf, at);
  if (typeof d === 'string') return d;
  if (d.length !== 1 || d[0].type !== DESC_EXTENT_PAGE) return 'does not hold exactly one EXTENT_PAGE descriptor';
  return undefined;
}
