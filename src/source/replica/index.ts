/** The replica directory as a source (filled in by the catalog work of issue #10). */
import type { SourceKind } from '../catalog';

export const source: SourceKind = {
  kind: 'replica',
  detect: () => true,
  open: async () => {
    throw new Error('replica catalog: not wired yet');
  },
};
