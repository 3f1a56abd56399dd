import type { Command } from 'commander';
import { variantInfo } from '../../model/info.ts';
import { OFFICIAL_VARIANTS, phiVariant } from '../../model/spec.ts';
import { parseNumber, table, thousands } from '../format.ts';

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('the EfficientNet family: variants, sizes, costs');

  model
    .command('list')
    .description('list the official variants')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => {
      const infos = OFFICIAL_VARIANTS.map((v) => variantInfo(v));
      if (opts.json) return void process.stdout.write(`${JSON.stringify(infos, null, 2)}\n`);
      process.stdout.write(
        table(
          infos.map((i) => [i.variant, i.resolution, i.width, i.depth, thousands(i.params), `${(i.macs / 1e9).toFixed(2)}G`]),
          ['variant', 'res', 'width', 'depth', 'params', 'MACs'],
        ),
      );
      process.stdout.write('\nCustom variants: phi-X (compound coefficient φ on the B0 baseline) or custom-wW-dD-rR.\n');
    });

  model
    .command('info')
    .description('architecture, parameters and multiply-adds of a variant')
    .argument('[variant]', 'b0…b7, v2-b0…v2-b3, v2-s, v2-m, v2-l, phi-X, custom-wW-dD-rR')
    .option('--phi <phi>', 'compound coefficient φ instead of a named variant', parseNumber('--phi', 0, 10))
    .option('--json', 'machine-readable output')
    .action((variant: string | undefined, opts: { phi?: number; json?: boolean }) => {
      if (opts.phi === undefined && !variant) throw new Error('give a variant or --phi');
      const info = variantInfo(opts.phi !== undefined ? phiVariant(opts.phi) : variant!);
      if (opts.json) return void process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      const rows: [string, string][] = [
        ['variant', `${info.variant} (${info.family}, ${info.origin}${info.phi !== undefined ? `, φ = ${info.phi}` : ''})`],
        ['width × depth', `${info.width} × ${info.depth}`],
        ['resolution', `${info.resolution}×${info.resolution}`],
        ['dropout', String(info.dropout)],
        ['blocks per stage', `${info.blocksPerStage.join(' ')} (${info.blocks} blocks)`],
        ['params (top)', `${thousands(info.params)} total, ${thousands(info.paramsTrainable)} trainable`],
        ['params (no top)', `${thousands(info.paramsNoTop)} total, ${thousands(info.paramsNoTopTrainable)} trainable`],
        ['multiply-adds', `${(info.macs / 1e9).toFixed(3)} G at ${info.resolution}×${info.resolution}`],
      ];
      process.stdout.write(table(rows));
    });
}
