/**
 * Longhorn v2 disks (SPDK lvstores on a block device or an image file) as a
 * source: detected by the blobstore signature `SPDKBLOB` at byte 0; several
 * disks open as one catalog (a volume's replicas may be on several).
 */
import type { Catalog, SourceKind, SourceOptions } from '../catalog';
import { hasSignature } from './device';

export const source: SourceKind = {
  kind: 'spdk',
  detect: (arg: string) => hasSignature(arg),
  // The parser is loaded when a disk is opened, not when a kind is detected (every command detects).
  open: async (args: string[], opts: SourceOptions): Promise<Catalog> => (await import('./open')).openSpdk(args, opts),
};

