/**
 * The replica directory (`<disk>/replicas/<volume>-<id>/`) as a source: the
 * fallback kind, so that a path that is nothing else gets the replica
 * reader's own one-line error.
 */
import { ChainfsError } from '../../errors';
import type { SourceKind } from '../catalog';
import { ReplicaCatalog } from './catalog';

export const source: SourceKind = {
  kind: 'replica',
  detect: () => true,
  open: async (args, opts) => {
    if (args.length > 1) {
      throw new ChainfsError(args[1], 'one replica directory at a time (several are compared with `chainfs compare`, or read as a node from their data roots)');
    }
    return ReplicaCatalog.open(args[0], opts);
  },
};
