/**
 * A view named by one word (`diff --from A`, `export --since A`): a snapshot
 * for sources that have snapshots, a backup on a backup target, each within
 * whatever the other options (--volume, --replica) select.
 */
import type { Catalog, ViewSelector } from './catalog';

export function namedView(catalog: Catalog, base: ViewSelector, name: string | undefined): ViewSelector {
  if (name === undefined) return base;
  return catalog.kind === 'backupstore' ? { ...base, backup: name } : { ...base, snapshot: name };
}
