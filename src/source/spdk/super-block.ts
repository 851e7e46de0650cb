/**
 * The blobstore super block: the first 4 KiB of a v2 disk.
 *
 * SPDK: lib/blob/blobstore.h `struct spdk_bs_super_block` (packed, little
 * endian); validation as `bs_super_validate` and defaults as
 * `bs_parse_super` (blobstore.c): signature `SPDKBLOB`, version 1..3,
 * CRC-32C over bytes [0, 4092), `size` 0 = the device, `io_unit_size` and
 * `md_page_size` 0 = 4096. An lvstore's bstype is `LVOLSTORE`
 * (lib/lvol/lvol.c).
 */
import { ChainfsError } from '../../errors';
import { PAGE_CRC_OFFSET, crc32c } from './crc32c';

export const SUPER_BLOCK_SIZE = 4096;
export const SIGNATURE = 'SPDKBLOB';
/** The newest super block version this reader knows (SPDK_BS_VERSION). */
export const MAX_VERSION = 3;
/** The md page struct is 4 KiB whatever `md_page_size` (the stride) is. */
export const MD_PAGE_STRUCT_SIZE = 4096;

export interface SuperBlock {
  version: number;
  /** 1 after a clean unload; 0 once SPDK changed metadata (masks then stale). */
  clean: number;
  /** Blob id of the lvstore's own blob (name, uuid). */
  superBlob: number;
  /** Bytes per cluster (1 MiB for Longhorn). */
  clusterSize: number;
  /** Mask regions, in md pages from the start of the device. */
  usedPageMask: { start: number; len: number };
  usedClusterMask: { start: number; len: number };
  usedBlobidMask: { start: number; len: number };
  /** Metadata region, in md pages from the start of the device. */
  mdStart: number;
  mdLen: number;
  /** `LVOLSTORE` for an lvstore (NULs stripped). */
  bstype: string;
  /** Blobstore size in bytes (the device size when 0 on disk). */
  size: number;
  /** Bytes per I/O unit (512 on Longhorn's aio disks). */
  ioUnitSize: number;
  /** Stride of metadata pages in bytes (4096 unless the device's block is larger). */
  mdPageSize: number;
  crc: number;
}

/**
 * Parses and validates the super block in `buf` (4 KiB read at byte 0 of
 * `file`, a device of `deviceSize` bytes). Throws ChainfsError naming the
 * file when it is not a blobstore or one this reader cannot read.
 */
export function parseSuperBlock(buf: Buffer, file: string, deviceSize: number): SuperBlock {
  if (buf.length < SUPER_BLOCK_SIZE) throw new ChainfsError(file, `too short for an SPDK blobstore (${buf.length} bytes; the super block is 4096)`);
  if (buf.toString('latin1', 0, 8) !== SIGNATURE) throw new ChainfsError(file, 'not an SPDK blobstore (no SPDKBLOB signature at byte 0)');
  const version = buf.readUInt32LE(8);
  if (version < 1) throw new ChainfsError(file, `SPDK super block version ${version} is invalid`);
  if (version > MAX_VERSION) throw new ChainfsError(file, `SPDK super block version ${version} is newer than this reader knows (up to ${MAX_VERSION}); refusing to guess its layout`);
  const crc = buf.readUInt32LE(PAGE_CRC_OFFSET);
  const calc = crc32c(buf, 0, PAGE_CRC_OFFSET);
  if (crc !== calc) throw new ChainfsError(file, `SPDK super block checksum mismatch (stored 0x${hex32(crc)}, computed 0x${hex32(calc)}): corrupt super block`);
  const bstype = buf.toString('latin1', 56, 72).replace(/\0+$/, '');
  if (bstype !== 'LVOLSTORE') {
    throw new ChainfsError(file, `SPDK blobstore of type ${JSON.stringify(bstype)}, not an lvstore (LVOLSTORE); only Longhorn v2 disks (lvstores) are read`);
  }
  const sb: SuperBlock = {
    version,
    clean: buf.readUInt32LE(16),
    superBlob: u64(buf, 20, file, 'super_blob'),
    clusterSize: buf.readUInt32LE(28),
    usedPageMask: { start: buf.readUInt32LE(32), len: buf.readUInt32LE(36) },
    usedClusterMask: { start: buf.readUInt32LE(40), len: buf.readUInt32LE(44) },
    mdStart: buf.readUInt32LE(48),
    mdLen: buf.readUInt32LE(52),
    bstype,
    // Fields later versions added were reserved (zero) before: read them
    // whatever the version, as SPDK does (`bs_parse_super`).
    usedBlobidMask: { start: buf.readUInt32LE(72), len: buf.readUInt32LE(76) },
    size: u64(buf, 80, file, 'size'),
    ioUnitSize: buf.readUInt32LE(88),
    mdPageSize: buf.readUInt32LE(92),
    crc,
  };
  if (sb.size === 0) sb.size = deviceSize;
  if (sb.ioUnitSize === 0) sb.ioUnitSize = 4096;
  if (sb.mdPageSize === 0) sb.mdPageSize = 4096;
  checkBounds(sb, file);
  return sb;
}

function checkBounds(sb: SuperBlock, file: string): void {
  const bad = (what: string) => new ChainfsError(file, `SPDK super block: ${what}`);
  const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
  if (!pow2(sb.mdPageSize) || sb.mdPageSize < 4096 || sb.mdPageSize > (1 << 20)) throw bad(`md_page_size ${sb.mdPageSize} is not a power of two from 4096 to 1 MiB`);
  if (!pow2(sb.ioUnitSize) || sb.ioUnitSize < 512 || sb.ioUnitSize > sb.mdPageSize) throw bad(`io_unit_size ${sb.ioUnitSize} is not a power of two from 512 to md_page_size`);
  if (sb.clusterSize < sb.mdPageSize || sb.clusterSize % sb.mdPageSize !== 0 || sb.clusterSize > (1 << 30)) {
    throw bad(`cluster_size ${sb.clusterSize} is not a multiple of the md page size (${sb.mdPageSize}) up to 1 GiB`);
  }
  const pages = Math.floor(sb.size / sb.mdPageSize);
  if (sb.mdLen === 0 || sb.mdStart + sb.mdLen > pages) throw bad(`metadata region (pages ${sb.mdStart}+${sb.mdLen}) lies outside the blobstore (${pages} pages)`);
  if (sb.mdStart === 0) throw bad('metadata region starts at page 0 (the super block)');
  for (const [name, m] of [['used_page_mask', sb.usedPageMask], ['used_cluster_mask', sb.usedClusterMask], ['used_blobid_mask', sb.usedBlobidMask]] as const) {
    if (m.len > 0 && (m.start === 0 || m.start + m.len > sb.mdStart)) throw bad(`${name} (pages ${m.start}+${m.len}) overlaps the super block or the metadata region`);
  }
  const superPage = sb.superBlob - 2 ** 32;
  if (sb.superBlob !== 0 && (superPage < 0 || superPage >= sb.mdLen)) throw bad(`super_blob 0x${sb.superBlob.toString(16)} is not a blob id of the metadata region`);
}

function u64(buf: Buffer, at: number, file: string, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ChainfsError(file, `SPDK super block: ${what} 0x${v.toString(16)} is out of range`);
  return Number(v);
}

export function hex32(n: number): string {
  return n.toString(16).padStart(8, '0');
}
