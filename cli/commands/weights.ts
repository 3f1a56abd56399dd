import type { Command } from 'commander';
import { byteProgress } from '../progress.ts';
import { fetchWeights } from '../../model/weights-fetch.ts';
import { importKerasWeights, readManifest, type NormalizationMode } from '../../model/weights.ts';
import { thousands } from '../format.ts';
import { ensureOnnx } from '../../model/onnx/cache.ts';
import { publishWeights } from '../../pipeline/aws/s3-weights.ts';
import { connect, LOCAL_CREDENTIALS } from '../../pipeline/aws/wiring.ts';

export function registerWeightsCommands(program: Command): void {
  const weights = program.command('weights').description('official Keras weights → EffiTag weights artifacts');

  weights
    .command('import')
    .description('convert a Keras .h5 weight file (V1 or V2, with or without top) into an artifact directory')
    .requiredOption('--keras <file>', 'Keras .h5 weight file')
    .requiredOption('--variant <variant>', 'variant the file belongs to, e.g. b0 or v2-s')
    .requiredOption('--out <dir>', 'artifact directory to write')
    .option('--normalization <mode>', 'V1 normalization variance: auto | std-as-variance | variance', 'auto')
    .action(async (opts: { keras: string; variant: string; out: string; normalization: NormalizationMode }) => {
      if (!['auto', 'std-as-variance', 'variance'].includes(opts.normalization))
        throw new Error(`--normalization must be auto, std-as-variance or variance`);
      const m = await importKerasWeights(opts.keras, { variant: opts.variant, out: opts.out, normalization: opts.normalization });
      process.stdout.write(
        `${opts.out}: ${m.variant}${m.includeTop ? ` with ${m.classes}-class top` : ' without top'}, ${m.tensors.length} tensors, ${thousands(m.bytes)} bytes, sha256 ${m.sha256}\n`,
      );
      if (m.source.note) process.stdout.write(`note: ${m.source.note}\n`);
    });

  weights
    .command('fetch')
    .description('download the official Keras weights (MD5-checked, cached) and convert them')
    .argument('<variant>', 'b0…b7, v2-b0…v2-b3, v2-s, v2-m, v2-l')
    .option('--notop', 'the file without the classifier top')
    .option('--url <url>', 'download from this URL instead (env EFFITAG_WEIGHTS_URL); needs --md5')
    .option('--md5 <hex>', 'expected MD5 of the file at --url (env EFFITAG_WEIGHTS_MD5)')
    .option('--out <dir>', 'artifact directory (default: in the cache)')
    .option('--cache <dir>', 'cache directory (default: $EFFITAG_CACHE_DIR or ~/.cache/effitag)')
    .action(async (variant: string, opts: { notop?: boolean; url?: string; md5?: string; out?: string; cache?: string }) => {
      const result = await fetchWeights({ variant, ...opts, progress: process.stderr.isTTY ? byteProgress(`${variant}`) : undefined });
      process.stdout.write(`${result.downloaded ? 'downloaded' : 'cached'} ${result.h5Path}\n`);
      process.stdout.write(`${result.converted ? 'converted' : 'reused'} ${result.dir} (sha256 ${result.manifest.sha256})\n`);
    });

  weights
    .command('export-onnx')
    .description('export the ONNX graph of a weights artifact (BatchNorm folded, preprocessing inside, dynamic batch)')
    .requiredOption('--weights <dir>', 'weights artifact directory')
    .option('--variant <variant>', 'expected variant of the weights (checked)')
    .option('--out <file>', 'write here instead of the cache beside the weights')
    .action(async (opts: { weights: string; variant?: string; out?: string }) => {
      const r = await ensureOnnx(opts.weights, { variant: opts.variant, out: opts.out });
      process.stdout.write(`${r.cached ? 'cached' : 'exported'} ${r.path}\n`);
    });

  weights
    .command('publish')
    .description('upload a weights artifact to S3 for the deployed stack (s3://bucket/prefix/<variant>/, or <NAME>/ for a custom model)')
    .requiredOption('--weights <dir>', 'weights artifact directory')
    .option('--variant <variant>', 'expected variant of the weights (checked)')
    .argument('<s3url>', "the stack's weights location, s3://bucket/prefix")
    .action(async (url: string, opts: { weights: string; variant?: string }) => {
      const m = await readManifest(opts.weights);
      if (opts.variant && m.variant !== opts.variant) throw new Error(`${opts.weights} holds ${m.variant}, not ${opts.variant}`);
      // EFFITAG_S3_ENDPOINT: publish to an S3-compatible endpoint (the embedded stack, a test) instead of AWS.
      const endpoint = process.env.EFFITAG_S3_ENDPOINT;
      const { s3 } = connect(
        endpoint
          ? {
              kind: 'endpoint',
              endpoints: {
                s3Endpoint: endpoint,
                credentials: {
                  accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? LOCAL_CREDENTIALS.accessKeyId,
                  secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? LOCAL_CREDENTIALS.secretAccessKey,
                },
              },
            }
          : { kind: 'aws' },
      );
      const r = await publishWeights(s3, opts.weights, url);
      process.stdout.write(
        `published ${r.manifest.variant} (sha256 ${r.manifest.sha256}) to ${r.keys.map((k) => `s3://${url.replace(/^s3:\/\//, '').split('/')[0]}/${k}`).join(', ')}\n`,
      );
    });
}
