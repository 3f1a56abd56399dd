#!/usr/bin/env node
// Builds the CPU runtime Lambda layer: onnxruntime-node and sharp for linux on one architecture,
// laid out as nodejs/node_modules (what Lambda puts on NODE_PATH). Binaries for other platforms
// are pruned so the layer stays well under Lambda's 250 MB limit.
//
//   node layers/build.mjs <x86_64|arm64> <outputDir>
// The CDK stack runs this through local bundling during `cdk synth`; tests skip bundling.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [arch = 'x86_64', out = join(dirname(fileURLToPath(import.meta.url)), 'cpu-runtime', 'build', arch)] = process.argv.slice(2);
const cpu = { x86_64: 'x64', arm64: 'arm64' }[arch];
if (!cpu) throw new Error(`architecture must be x86_64 or arm64, got ${arch}`);
const here = join(dirname(fileURLToPath(import.meta.url)), 'cpu-runtime');
const target = join(out, 'nodejs');
mkdirSync(target, { recursive: true });
cpSync(join(here, 'package.json'), join(target, 'package.json'));
execFileSync('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', '--os=linux', `--cpu=${cpu}`, '--libc=glibc'], {
  cwd: target,
  stdio: 'inherit',
  env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' },
});
// onnxruntime-node ships every platform's binaries: keep linux/<cpu> only.
const napi = join(target, 'node_modules', 'onnxruntime-node', 'bin', 'napi-v6');
if (existsSync(napi)) {
  for (const os of readdirSync(napi)) {
    if (os !== 'linux') {
      rmSync(join(napi, os), { recursive: true, force: true });
      continue;
    }
    for (const a of readdirSync(join(napi, os))) if (a !== cpu) rmSync(join(napi, os, a), { recursive: true, force: true });
  }
}
console.log(`layer for linux/${cpu} in ${out}`);
