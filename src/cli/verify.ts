/**
 * `chainfs verify TARGET`: checks a backup target without restoring it.
 * Every block the chosen backups reference is fetched once, decompressed
 * and checked against its checksum, as Longhorn's restore would, but past
 * the first bad one. Exit 0: clean; 1: damaged (a bad block, a backup
 * cfg that cannot be read or lists impossible blocks, blocks whose owner is
 * unknown); 2: trouble (the target cannot be read). Under --json, trouble is
 * the `{"error": ...}` document on stdout, as every command's failure.
 */
import { Command } from 'commander';
import { ChainfsError, oneLine } from '../errors';
import { formatBytes } from '../units';
import type { VerifyReport } from '../source/backupstore/verify';
import { refuseUrlConflicts } from '../source/backupstore/url';
import { action, exitAfterStdout, jobsValue, stdoutFailureExits, warn } from './common';
import { errorCode, errorDocument, jsonRequested } from './json';

interface VerifyOptions {
  volume?: string;
  backup?: string;
  backingImage?: string;
  json?: boolean;
  jobs?: number;
  cacheMb?: number;
}

const EXIT_DAMAGED = 1;
const EXIT_TROUBLE = 2;

export function verifyCommand(): Command {
  return new Command('verify')
    .description("check a backup target's blocks (exist, decompress, match their checksums) without restoring")
    .argument('<target>', 'a directory holding backupstore/, vfs:///path, s3://bucket@region/prefix/, or a backup URL')
    .option('--volume <name>', 'only this volume')
    .option('--backup <name>', 'only this backup')
    .option('--backing-image <name>', 'only this backing-image backup')
    .option('--json', 'machine-readable report')
    .option('--jobs <n>', 'parallel block fetches', jobsValue)
    .action(action(async (arg: string, opts: VerifyOptions) => {
      stdoutFailureExits(EXIT_TROUBLE);
      let report: VerifyReport;
      try {
        report = await run(arg, opts);
      } catch (e) {
        if (!(e instanceof ChainfsError)) throw e;
        if (opts.json || jsonRequested()) process.stdout.write(errorDocument(errorCode(e), oneLine(e.message)));
        process.stderr.write(`chainfs: ${oneLine(e.message)}\n`);
        process.exit(EXIT_TROUBLE);
      }
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : render(report));
      exitAfterStdout(report.damaged ? EXIT_DAMAGED : 0);
    }));
}

async function run(arg: string, opts: VerifyOptions): Promise<VerifyReport> {
  const { openBackupstore } = await import('../source/backupstore/index');
  const { verifyTarget } = await import('../source/backupstore/verify');
  const cat = await openBackupstore([arg], { jobs: opts.jobs, cacheMb: opts.cacheMb });
  try {
    for (const w of cat.warnings) warn(w);
    const tty = process.stderr.isTTY;
    let last = 0;
    const url = cat.urlSelection; // a backup URL given as the target selects too
    refuseUrlConflicts(cat.label, url, opts);
    // No conflicts (refused above): --volume repeating the URL's volume keeps the URL's backup.
    const sel = opts.volume !== undefined || opts.backup !== undefined || opts.backingImage !== undefined
      ? { volume: opts.volume ?? url.volume, backup: opts.backup ?? url.backup, backingImage: opts.backingImage }
      : url;
    const report = await verifyTarget(cat, sel,
      tty ? (done, total) => {
        const now = Date.now();
        if (now - last < 200 && done < total) return;
        last = now;
        process.stderr.write(`\rchecked ${done}/${total} blocks, ${formatBytes(cat.store.stats.fetchedBytes)} read`);
        if (done === total) process.stderr.write('\n');
      } : undefined);
    return report;
  } finally {
    cat.close();
  }
}

function render(r: VerifyReport): string {
  const lines: string[] = [];
  const name = (b: { volume: string | null; name: string }) => (b.volume ? `${b.volume}/${b.name}` : `backing image ${b.name}`);
  for (const b of r.backups) {
    if (b.state === 'complete') lines.push(`ok       ${name(b)} (${b.blocks} blocks)`);
    else if (b.state === 'damaged' && b.badBlocks.length === 0) lines.push(`DAMAGED  ${name(b)}: ${b.problem ?? 'damaged'}`);
    else if (b.state === 'damaged') {
      lines.push(`DAMAGED  ${name(b)}: ${b.badBlocks.length} of ${b.blocks} blocks bad`);
      for (const x of b.badBlocks) lines.push(`  offset ${x.offset} checksum ${x.checksum}: ${x.problem} (${x.detail})`);
    } else lines.push(`skipped  ${name(b)}: ${b.state}${b.problem ? ` (${b.problem})` : ''}`);
  }
  lines.push('', `${r.checkedBlocks} distinct blocks checked, ${formatBytes(r.fetchedBytes)} read; `
    + `${r.badObjects.length} bad block file(s); ${r.unreferencedBlocks} unreferenced block file(s)`
    + `${r.unreferencedBlocks ? ' (garbage left when cleanup was skipped; harmless)' : ''}`
    + `${r.ownerUnknownBlocks ? `; ${r.ownerUnknownBlocks} block file(s) referenced by no readable cfg: owner unknown `
      + '(a backup cfg could not be read; they may be its only copy: keep them)' : ''}`);
  lines.push(r.damaged ? 'result: DAMAGED' : 'result: clean');
  return `${lines.map((l) => oneLine(l)).join('\n')}\n`;
}
