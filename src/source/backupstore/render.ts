/** `inspect` text for a backup target: volumes, their backups, backing images, warnings. */
import { table } from '../../text';
import { formatBytes } from '../../units';
import type { BackupstoreCatalog } from './catalog';
import { backingImageState, backupState } from './catalog';

/** The PVC a volume belongs to, from the KubernetesStatus label (itself JSON), or ''. */
function pvcOf(labels: Record<string, string> | undefined): string {
  try {
    const k = JSON.parse(labels?.KubernetesStatus ?? '') as { namespace?: string; pvcName?: string };
    return k.pvcName ? `${k.namespace ?? ''}/${k.pvcName}` : '';
  } catch {
    return '';
  }
}

export function renderCatalog(c: BackupstoreCatalog): string {
  const lines = [`backup target ${c.label}`, `${c.volumes.length} volume(s), ${c.backingImages.length} backing image backup(s)`];
  for (const v of c.volumes) {
    lines.push('');
    if (!v.cfg) {
      lines.push(`volume ${v.name}: unusable: ${v.problem ?? 'no volume.cfg'}`);
    } else {
      const pvc = pvcOf(v.cfg.labels);
      lines.push(`volume ${v.name}  ${formatBytes(v.cfg.size)} (${v.cfg.size} bytes)  compression ${v.cfg.compression}`
        + `  backing image ${v.cfg.backingImageName || '-'}${pvc ? `  pvc ${pvc}` : ''}`
        + `${v.cfg.storageClassName ? `  storage class ${v.cfg.storageClassName}` : ''}  last backup ${v.cfg.lastBackupName || '-'}`);
    }
    if (v.backups.length === 0) {
      lines.push('  no backups');
      continue;
    }
    const rows = [['  BACKUP', 'SNAPSHOT', 'CREATED', 'DATA', 'BLOCKS', 'COMPRESSION', 'MODE', 'STATE']];
    for (const b of v.backups) {
      rows.push([`  ${b.name}`, b.cfg?.snapshotName || '-', b.cfg?.createdTime || '-', b.cfg ? formatBytes(b.cfg.size) : '-',
        b.cfg ? String(b.cfg.blockCount) : '-', b.cfg?.compression ?? '-',
        b.cfg ? (b.cfg.parameters['backup-mode'] ?? (b.cfg.isIncremental ? 'incremental' : 'full')) : '-',
        backupState(b)]);
    }
    lines.push(table(rows));
    for (const b of v.backups) if (b.problem) lines.push(`  ${b.name}: ${b.problem}`);
  }
  if (c.backingImages.length) {
    lines.push('', 'backing images:');
    const rows = [['  NAME', 'SIZE', 'BLOCKS', 'COMPRESSION', 'CHECKSUM', 'STATE']];
    for (const bi of c.backingImages) {
      rows.push([`  ${bi.name}`, bi.cfg ? formatBytes(bi.cfg.size) : '-', bi.cfg ? String(bi.cfg.blockCount) : '-',
        bi.cfg?.compression ?? '-', bi.cfg?.checksum ? `${bi.cfg.checksum.slice(0, 16)}...` : '-',
        backingImageState(bi)]);
    }
    lines.push(table(rows));
    for (const bi of c.backingImages) if (bi.problem) lines.push(`  ${bi.name}: ${bi.problem}`);
  }
  if (c.warnings.length) lines.push('', 'warnings:', ...c.warnings.map((w) => `  ${w}`));
  return `${lines.join('\n')}\n`;
}
