/**
 * `chainfs map DIR`: the view's resolved runs, in the shape of
 * `qemu-img map --output=json` plus the owning layer's file name. Streams
 * region by region, so a 2 TiB view needs no more memory than a small one.
 */
import { Command } from 'commander';
import { BrokenRange, REGION_SIZE } from '../chain/chain';
import type { ResolvedRun } from '../chain/source';
import { action, addSourceOptions, openSelectedView, usageFail, type SourceCliOptions } from './common';
import { formatBytes } from '../units';

const STEP = 64 * REGION_SIZE;

export function mapCommand(): Command {
  return addSourceOptions(new Command('map'), true)
    .description("list the view's runs: which layer each byte range comes from")
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks')
    .option('--json', 'JSON like qemu-img map --output=json, plus "file"')
    .option('--output <fmt>', 'json: the same as --json (qemu-img map\'s spelling)')
    .addHelpText('after', `
JSON (docs/json.md): [{"start", "length", "depth", "present", "zero", "data", "file"}, ...]; failures: {"error": {...}}`)
    .action(action(async (sources: string[], opts: SourceCliOptions & { json?: boolean; output?: string }) => {
      if (opts.output !== undefined && opts.output !== 'json' && opts.output !== 'human') {
        usageFail(`--output takes json or human, not ${JSON.stringify(opts.output)}`);
      }
      if (opts.output === 'json') opts.json = true;
      const selected = await openSelectedView(sources, opts);
      try {
        const view = { chain: selected.view.chain, size: selected.view.chain.size };
        const depth = new Map(view.chain.layers.map((l, i) => [l, i]));
        const out: string[] = [];
        let started = false;
        const flush = () => { if (out.length) { process.stdout.write(`${out.join('')}`); started = true; } out.length = 0; };
        if (opts.json) out.push('[');
        else out.push(`${'OFFSET'.padEnd(16)}${'LENGTH'.padEnd(16)}${'DATA'.padEnd(6)}FILE\n`);
        let first = true;
        let pending: ResolvedRun | undefined;
        const emit = (r: ResolvedRun) => {
          if (r.layer instanceof BrokenRange) throw r.layer.error; // a map with a hole in it is no map
          if (opts.json) {
            const e = {
              start: r.offset, length: r.length, depth: r.layer ? depth.get(r.layer) : view.chain.layers.length,
              present: r.layer !== null, zero: r.layer === null, data: r.layer !== null,
              file: r.layer ? r.layer.name : null,
            };
            out.push(`${first ? '' : ',\n'}${JSON.stringify(e)}`);
          } else {
            out.push(`${`0x${r.offset.toString(16)}`.padEnd(16)}${formatBytes(r.length).padEnd(16)}${(r.layer ? 'yes' : 'zero').padEnd(6)}${r.layer ? r.layer.name : '-'}\n`);
          }
          first = false;
        };
        try {
          for (let pos = 0; pos < view.size; pos += STEP) {
            for (const r of view.chain.runs(pos, STEP)) {
              if (pending && pending.layer === r.layer && pending.offset + pending.length === r.offset) {
                pending.length += r.length;
              } else {
                if (pending) emit(pending);
                pending = { ...r };
              }
            }
            if (out.length > 4096) flush();
          }
          if (pending) emit(pending);
        } catch (e) {
          // Part of the array is out: end its line, so that --json's error document is a line of its own.
          if (started) process.stdout.write('\n');
          throw e;
        }
        if (opts.json) out.push(']\n');
        flush();
      } finally {
        selected.close();
      }
    }));
}
