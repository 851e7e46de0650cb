/** `chainfs inspect DIR`: the chain, its allocation, the backing image, warnings. */
import * as path from 'node:path';
import { Command } from 'commander';
import { replicaReport, type ReplicaReport } from '../chain/report';
import { action, addReplicaOptions, openLayers, type ReplicaOptions } from './common';
import { formatBytes } from '../units';
import { table } from './format';

export function inspectCommand(): Command {
  return addReplicaOptions(new Command('inspect'))
    .description("show a replica's chain, snapshots, allocation and backing image")
    .argument('<dir>', 'Longhorn replica directory')
    .option('--json', 'machine-readable output')
    .action(action((dir: string, opts: ReplicaOptions & { json?: boolean }) => {
      const layers = openLayers(dir, opts, true);
      try {
        const rep = replicaReport(layers);
        process.stdout.write(opts.json ? `${JSON.stringify(rep, null, 2)}\n` : render(rep));
      } finally {
        layers.close();
      }
    }));
}

function flags(d: { removed: boolean; userCreated: boolean }): string {
  return [d.removed ? 'removed' : '', d.userCreated ? 'user' : ''].filter(Boolean).join(',');
}

export function render(r: ReplicaReport): string {
  const state = r.rebuilding ? 'REBUILDING (incomplete)' : r.dirty ? 'dirty (not closed cleanly, or in use)' : 'clean';
  const lines = [
    `replica   ${r.dir}`,
    `volume    ${formatBytes(r.size)} (${r.size} bytes), head ${r.head}, ${state}${r.encrypted ? ', encrypted' : ''}`,
    `backing   ${r.backing ? `${r.backing.path} (${r.backing.format}, virtual ${formatBytes(r.backing.virtualSize)}, allocated ${formatBytes(r.backing.allocatedBytes)})` : 'none'}`,
    '',
    'chain (head first):',
  ];
  const rows = [['  #', 'FILE', 'KIND', 'SIZE', 'ALLOCATED', 'CREATED', 'FLAGS']];
  r.chain.forEach((d, i) => rows.push([`  ${r.chain.length - i}`, d.file, d.kind, formatBytes(d.size),
    formatBytes(d.allocatedBytes), d.created, flags(d)]));
  if (r.backing) rows.push(['  0', path.join(path.basename(path.dirname(r.backing.path)), path.basename(r.backing.path)), `backing ${r.backing.format}`, formatBytes(r.backing.virtualSize), formatBytes(r.backing.allocatedBytes), '', '']);
  lines.push(table(rows));
  const off = r.snapshots.filter((s) => !s.inChain);
  if (off.length) {
    lines.push('', "snapshots not in the head's chain (after a revert):");
    lines.push(table([['  NAME', 'PARENT', 'SIZE', 'ALLOCATED', 'CREATED', 'FLAGS'],
      ...off.map((s) => [`  ${s.name}`, s.parent || '-', formatBytes(s.size), formatBytes(s.allocatedBytes), s.created,
        s.problem ? `unusable: ${s.problem}` : flags(s)])]));
  }
  const bad = r.snapshots.filter((s) => s.inChain && s.problem);
  for (const s of bad) lines.push(`snapshot ${s.name}: unusable: ${s.problem}`);
  if (r.warnings.length) lines.push('', 'warnings:', ...r.warnings.map((w) => `  ${w}`));
  return `${lines.join('\n')}\n`;
}
