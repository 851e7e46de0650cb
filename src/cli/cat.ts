/**
 * `chainfs cat SOURCE`: the flattened view on stdout, for pipes, ssh and dd;
 * with -p its progress on stderr (a bar on a terminal, percentage lines
 * otherwise), so `pv` is not needed.
 */
import { Command } from 'commander';
import { action, addSourceOptions, openSelectedView, type SourceCliOptions } from './common';
import { checkStdoutNotTerminal, streamView } from './stream';

export function catCommand(): Command {
  return addSourceOptions(new Command('cat'), true)
    .description('write the flattened view (raw image bytes) to stdout')
    .argument('<source...>', 'a replica directory, data roots, a backup target, or v2 disks')
    .option('-p, --progress', 'show progress on stderr (a bar on a terminal, percentage lines otherwise)')
    .addHelpText('after', `
Refuses a terminal on stdout. Example: chainfs cat REPLICA --snapshot s1 -p | gzip > s1.raw.gz`)
    .action(action(async (sources: string[], opts: SourceCliOptions & { progress?: boolean }) => {
      checkStdoutNotTerminal();
      const selected = await openSelectedView(sources, opts);
      try {
        const { progressFor } = await import('../materialize/progress');
        await streamView(selected.view.chain, process.stdout, progressFor(process.stderr, !!opts.progress));
      } finally {
        selected.close();
      }
    }));
}
