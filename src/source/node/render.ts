/** `inspect`'s text for data roots: one table per volume, the pick and why, then what belongs to no chain. */
import { table } from '../../text';
import { formatBytes } from '../../units';
import type { NodeReport, ReplicaRow } from './report';

/** The text of `inspect ROOT...`, ending with a newline. */
export function renderNode(r: NodeReport): string {
  const lines: string[] = ['roots:'];
  const rootNo = new Map(r.roots.map((x, i) => [x.path, `#${i + 1}`]));
  lines.push(table([['  #', 'PATH', 'DISK UUID', 'CFG', 'REPLICAS', 'BACKING IMAGES'],
    ...r.roots.map((x, i) => [`  #${i + 1}`, x.path, x.diskUUID ?? '(no longhorn-disk.cfg)', x.cfgShape ?? '-', String(x.replicas), String(x.backingImages)])]));
  for (const v of r.volumes) {
    lines.push('', `volume ${v.name}  ${v.size === null ? 'size unknown' : `${formatBytes(v.size)} (${v.size} bytes)`}`);
    lines.push(table([['  REPLICA', 'ROOT', 'STATE', 'COUNTER', 'HEAD', 'HEAD MTIME (ns)', 'ALLOCATED', 'APPARENT', 'CHAIN', 'NEWEST SNAPSHOT', 'LONGHORN'],
      ...v.replicas.map((x) => [`  ${x.id ?? x.dir}${v.pick === (x.id ?? x.dir) ? ' *' : ''}`, rootNo.get(x.root) ?? x.root, state(x),
        x.revisionCounter === null ? '-' : String(x.revisionCounter), x.head ?? '-', x.headMtime ?? '-',
        x.headAllocatedBytes === null ? '-' : formatBytes(x.headAllocatedBytes), x.headSize === null ? '-' : formatBytes(x.headSize),
        x.chainLength === null ? '-' : String(x.chainLength),
        x.newestSnapshot ? `${x.newestSnapshot.name} ${x.newestSnapshot.created}` : '-',
        x.kept ? 'kept' : x.usable && v.rule !== 'ambiguous' ? 'ERR (rebuilt from the pick)' : '-'])]));
    lines.push(v.pick ? `  pick: ${v.pick} (${v.rule}): ${v.why}` : `  no pick (${v.rule}): ${v.why}${v.replicas.length ? '; choose with --replica DIR' : ''}`);
    for (const x of v.replicas.filter((y) => y.reason)) lines.push(`  ${x.id ?? x.dir}: not usable: ${x.reason}`);
  }
  if (r.backingImages.length) {
    lines.push('', 'backing images:');
    lines.push(table([['  NAME', 'UUID', 'COPIES', 'SIZE', 'USED BY'],
      ...r.backingImages.map((b) => [`  ${b.id}`, b.uuid, b.copies.map((c) => c.root).join(', '),
        b.copies[0]?.size === undefined ? '-' : formatBytes(b.copies[0].size), b.usedBy.length ? b.usedBy.join(', ') : '(none)'])]));
    for (const b of r.backingImages) {
      if (b.mismatch) lines.push(`  ${b.id}: ${b.mismatch}`);
      for (const c of b.copies) for (const p of c.problems) lines.push(`  ${c.path}: ${p}`);
    }
  }
  if (r.noise.length || r.tmp.length || r.unusedBackingImages.length) {
    lines.push('', 'not in any chain:');
    for (const n of r.noise) lines.push(`  ${n.path}: ${n.why}`);
    for (const t of r.tmp) lines.push(`  ${t.path}: ${t.why}${t.size === undefined ? '' : ` (${formatBytes(t.size)})`}`);
    for (const u of r.unusedBackingImages) lines.push(`  backing image ${u}: used by no replica on these roots`);
  }
  lines.push('', 'what offline data cannot know:', ...r.cannotKnow.map((c) => `  - ${c}`));
  if (r.warnings.length) lines.push('', 'warnings:', ...r.warnings.map((w) => `  ${w}`));
  return `${lines.join('\n')}\n`;
}

function state(x: ReplicaRow): string {
  if (!x.usable) return x.rebuilding ? 'Rebuilding' : x.error ? 'Error' : 'unusable';
  return x.dirty ? 'usable (Dirty: unclean)' : 'usable';
}
