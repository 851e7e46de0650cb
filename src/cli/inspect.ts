/**
 * `chainfs inspect SOURCE...`: every view the sources hold, their chains,
 * allocation, state and warnings; what each view holds (partition table,
 * file system and label, by `blkid -p` on its first MiB: local views only,
 * see probe.ts); and processes writing the source now (a live engine).
 * `--json` is the source's report with warnings as objects, plus
 * `contents` and `inUse` (docs/json.md).
 */
import { Command } from 'commander';
import type { Catalog } from '../source/catalog';
import { action, addSourceOptions, checkVolumeOption, openCatalog, type SourceCliOptions } from './common';
import { jsonWarning, withWarningObjects } from './json';
import { describeContents, haveBlkid, PROBE_LIMIT, probeViews, type ViewContents } from './probe';
import { table } from '../text';

type InspectOptions = SourceCliOptions & { json?: boolean; contents?: boolean };

export function inspectCommand(): Command {
  return addSourceOptions(new Command('inspect'), false)
    .description('show what a source holds: chains, snapshots, allocation, backing images, replicas, backups, '
      + 'what each view holds (partition table, file system, label), warnings')
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks')
    .option('--json', 'machine-readable output (docs/json.md)')
    .option('--no-contents', `do not probe what the views hold (blkid -p on the first MiB of up to ${PROBE_LIMIT} local views)`)
    .addHelpText('after', `
JSON (docs/json.md): the source's report plus "source", "views", "warnings" ({code, message, file?}),
"contents" and "inUse"; failures: {"error": {"code", "message"}} on stdout.`)
    .action(action(async (sources: string[], opts: InspectOptions) => {
      const catalog = await openCatalog(sources, opts, true);
      try {
        checkVolumeOption(catalog, opts.volume);
        const contents = opts.contents !== false && haveBlkid() ? await probeViews(catalog.views()) : [];
        const inUse = (catalog.inUse?.() ?? []).map(writerOnly);
        const advice = notRoot(catalog);
        process.stdout.write(opts.json ? jsonReport(catalog, contents, inUse, advice) : textReport(catalog, contents, [...inUse, ...advice]));
      } finally {
        catalog.close();
      }
    }));
}

/**
 * As a non-root user, views unreadable for want of permission: one line
 * saying what to do (Longhorn's files belong to root), listed with the
 * warnings about the source's state.
 */
function notRoot(catalog: Catalog): string[] {
  if (process.getuid?.() === 0) return [];
  const denied = catalog.views().filter((v) => v.problem && /permission denied/i.test(v.problem));
  if (denied.length === 0) return [];
  return [`${denied.length} view(s) are not readable by this user (permission denied): Longhorn's data belongs to root: run chainfs as root, e.g. with sudo`];
}

/** The mount's wording says what happens to a mount's views; inspect only says who writes. */
function writerOnly(w: string): string {
  return w.replace(/; views that change while mounted.*$/, '');
}

/**
 * The report, its warnings as objects (`advice` added to the top-level
 * ones), plus what every source's report has under the same keys:
 * `source` (its kind), `views` (every view: path, kind, name, size,
 * allocation, problem), `contents` and `inUse`.
 */
function jsonReport(catalog: Catalog, contents: ViewContents[], inUse: string[], advice: string[]): string {
  const doc = withWarningObjects(catalog.report()) as { warnings?: unknown[] };
  const views = catalog.views().map((v) => ({
    path: v.path, kind: v.kind, name: v.name, size: v.size, allocatedBytes: v.allocatedBytes, ...(v.problem ? { problem: v.problem } : {}),
  }));
  const warnings = [...(doc.warnings ?? []), ...advice.map(jsonWarning)];
  return `${JSON.stringify({ source: catalog.kind, ...doc, views, warnings, contents, inUse: inUse.map(jsonWarning) }, null, 2)}\n`;
}

/** The source's own text, then the contents table and the warning lines. */
function textReport(catalog: Catalog, contents: ViewContents[], inUse: string[]): string {
  let text = catalog.render();
  if (contents.length > 0) {
    const rows = contents.map((c) => [c.view, describeContents(c)]);
    text += `\ncontents (blkid -p on the first MiB):\n${indent(table([['VIEW', 'HOLDS'], ...rows]))}\n`;
  }
  for (const w of inUse) text += `warning: ${w}\n`;
  return text;
}

function indent(s: string): string {
  return s.split('\n').map((l) => (l ? `  ${l}` : l)).join('\n');
}
