/**
 * Opening Longhorn v2 disks as one catalog (the SPDK source's `open`, kept
 * apart from index.ts so that detecting a kind does not load the parser).
 */
import { ChainfsError } from '../../errors';
import type { SourceOptions } from '../catalog';
import { SpdkCatalog } from './catalog';
import { Disk } from './disk';

/**
 * Opens the disks read-only. With several disks, one that cannot be read
 * at all (no valid super block) becomes a warning and the rest are served;
 * with one, that is the error. Throws ChainfsError.
 */
export function openSpdk(args: string[], opts: SourceOptions = {}): SpdkCatalog {
  const warnings: string[] = [];
  const disks: Disk[] = [];
  const seen = new Set<string>();
  let lastError: unknown;
  for (const a of args) {
    try {
      const d = Disk.open(a, opts.force ?? false, (m) => warnings.push(m));
      const id = `${d.dev.stat.dev}:${d.dev.stat.ino}:${d.dev.stat.rdev}`;
      if (seen.has(id)) {
        d.close();
        warnings.push(`${a}: given twice; read once`);
        continue;
      }
      seen.add(id);
      const twin = disks.find((x) => x.lvs.uuid !== '' && x.lvs.uuid === d.lvs.uuid);
      if (twin) warnings.push(`${a}: same lvstore UUID ${d.lvs.uuid} as ${twin.dev.path}: two copies of one disk?${twin.lvs.name === d.lvs.name ? ` Names on both are told apart by position (NAME@${disks.indexOf(twin) + 1}, NAME@${disks.length + 1})` : ''}`);
      disks.push(d);
    } catch (e) {
      if (!(e instanceof ChainfsError) || args.length === 1) { for (const d of disks) d.close(); throw e; }
      lastError = e;
      warnings.push(`skipped: ${(e as Error).message}`);
    }
  }
  if (disks.length === 0) throw lastError;
  return new SpdkCatalog(disks, warnings);
}
