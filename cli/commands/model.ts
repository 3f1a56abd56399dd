import { ENV } from '../../base/runtime-names.ts';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { defaultWeightsDir } from '../../pipeline/aws/wiring.ts';
import { modelMarker } from '../../pipeline/marker.ts';
import { modelHash, type WeightsManifest } from '../../model/weights.ts';
import { modelId } from '../../pipeline/models.ts';
import { variantInfo } from '../../model/info.ts';
import { LIBRARY_VARIANTS, phiVariant } from '../../model/spec.ts';
import { parseNumber, table, thousands } from '../format.ts';

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('the EfficientNet family: variants, sizes, costs');

  model
    .command('list')
    .description('list the official variants, and the custom models (effitag train) in a weights catalog')
    .option('--weights <dir>', 'weights catalog to look in for custom models (env EFFITAG_WEIGHTS_DIR; default: the weights cache)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean; weights?: string }) => {
      const infos = LIBRARY_VARIANTS.map((v) => variantInfo(v));
      const catalog = resolve(opts.weights ?? process.env[ENV.weightsDir] ?? defaultWeightsDir());
      const custom = await customModels(catalog);
      if (opts.json) return void process.stdout.write(`${JSON.stringify({ variants: infos, custom }, null, 2)}\n`);
      process.stdout.write(
        table(
          infos.map((i) => [i.variant, i.resolution, i.width, i.depth, thousands(i.params), `${(i.macs / 1e9).toFixed(2)}G`]),
          ['variant', 'res', 'width', 'depth', 'params', 'MACs'],
        ),
      );
      process.stdout.write('\nCustom variants: phi-X (compound coefficient φ on the B0 baseline) or custom-wW-dD-rR.\n');
      if (!custom.length) return void process.stdout.write(`No custom models in ${catalog} (make one with effitag train).\n`);
      process.stdout.write(`\nCustom models in ${catalog} (a tier uses one with "model": NAME):\n`);
      process.stdout.write(
        table(
          custom.map((m) => [
            m.name,
            m.int8
              ? `${m.base}, int8 (top-1 agreement ${m.int8.top1 === undefined ? '?' : `${(100 * m.int8.top1).toFixed(1)} %`}${m.int8.forced ? ', forced' : ''})`
              : m.base,
            `${m.labels.length}: ${m.labels.slice(0, 4).join(', ')}${m.labels.length > 4 ? ', …' : ''}`,
            `${(m.valAccuracy * 100).toFixed(1)} %`,
            `${m.images.train}/${m.images.val}`,
            m.marker,
            m.createdAt.slice(0, 10),
          ]),
          ['name', 'base', 'labels', 'held-out acc.', 'train/val', 'marker', 'trained'],
        ),
      );
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

/** The custom models in a catalog: folders whose manifest records a training. */
async function customModels(catalog: string) {
  const entries = await readdir(catalog, { withFileTypes: true }).catch(() => []);
  const out = [];
  for (const e of entries.filter((d) => d.isDirectory()).sort((a, b) => a.name.localeCompare(b.name))) {
    const manifest = await readFile(join(catalog, e.name, 'manifest.json'), 'utf8').then(
      (t) => JSON.parse(t) as WeightsManifest,
      () => undefined,
    );
    const c = manifest?.custom;
    if (!manifest || !c) continue;
    // An int8 model of a custom model (weights quantize) keeps its float model's record: listed as NAME-int8.
    const name = modelId(manifest);
    out.push({
      name,
      dir: join(catalog, e.name),
      base: c.base.variant,
      labels: c.labels,
      valAccuracy: c.metrics.valAccuracy,
      images: c.images,
      marker: modelMarker(name, modelHash(manifest)),
      ...(manifest.quantization ? { int8: { top1: manifest.quantization.agreement[0]?.top1, forced: manifest.quantization.forced } } : {}),
      createdAt: manifest.createdAt,
    });
  }
  return out;
}
