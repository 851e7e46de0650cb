/**
 * One or more Longhorn data roots (`/var/lib/longhorn`, any other v1 disk)
 * as a source: a directory with `longhorn-disk.cfg`, or with `replicas/`
 * when the cfg is gone (then warned). Several roots open as one node.
 */
import * as fs from 'node:fs';
import type { SourceKind } from '../catalog';
import { looksLikeRoot } from './scan';

export const source: SourceKind = {
  kind: 'node',
  detect: (arg) => {
    try {
      return fs.statSync(arg).isDirectory() && looksLikeRoot(arg);
    } catch {
      return false;
    }
  },
  // Loaded when opened, not when detected (every command detects kinds).
  open: async (args, opts) => (await import('./catalog')).NodeCatalog.open(args, opts),
};
