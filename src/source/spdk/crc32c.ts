/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the
 * blobstore's super block and metadata pages. Written here (a dozen lines of
 * the format) rather than taken from a dependency.
 *
 * SPDK: lib/blob/blobstore.c `blob_md_page_calc_crc` (initial value and
 * final XOR 0xFFFFFFFF over the first 4092 bytes of a 4 KiB page).
 */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of buf[start, end), as SPDK computes it for a page (init and final XOR 0xFFFFFFFF). */
export function crc32c(buf: Uint8Array, start = 0, end = buf.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Bytes of a page the CRC covers; the CRC itself is the u32 at this offset. */
export const PAGE_CRC_OFFSET = 4092;

/** Whether the 4 KiB page at buf[at, at+4096) carries its own valid CRC-32C. */
export function pageCrcOk(buf: Buffer, at = 0): boolean {
  return crc32c(buf, at, at + PAGE_CRC_OFFSET) === buf.readUInt32LE(at + PAGE_CRC_OFFSET);
}
