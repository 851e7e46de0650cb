/**
 * Whether a replica holds an encrypted volume. Longhorn encrypts a volume
 * on the node with cryptsetup (LUKS) over the volume's block device, so an
 * encrypted volume's first bytes are a LUKS header (magic `LUKS\xba\xbe`,
 * cryptsetup's luks1/luks2 on-disk format); how v2 volumes are layered is
 * UNVERIFIED in the format document. chainfs serves the ciphertext as it
 * is (open it with `cryptsetup open` on a loop device of the view) and says so.
 */
import * as fs from 'node:fs';
import type { Disk } from './disk';
import { chainOf, type Lvol } from './lvstore';

const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);

/** True when the view of `lvol` starts with a LUKS header (one 6-byte pread; false when unreadable). */
export function startsWithLuks(disk: Disk, lvol: Lvol): boolean {
  if (lvol.problem) return false;
  for (const l of chainOf(lvol, disk.lvs.lvols)) {
    if (l.blob.numClusters === 0) return false;
    const dc = l.blob.clusters.get(0);
    if (dc === 0) continue;
    const b = Buffer.alloc(LUKS_MAGIC.length);
    try {
      return fs.readSync(disk.dev.fd, b, 0, b.length, dc * disk.lvs.bs.sb.clusterSize) === b.length && b.equals(LUKS_MAGIC);
    } catch {
      return false;
    }
  }
  return false;
}
