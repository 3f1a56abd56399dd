/**
 * The README's set-up is a plain `npm ci` (npm 10 or 11, no environment variable) on a machine that
 * reaches only the npm registry. Dependency install scripts are off (`.npmrc`: ignore-scripts), since
 * onnxruntime-node's downloads CUDA parts from outside the registry. These tests hold the pieces of
 * that promise that a clean clone's CI run (`.ci/run`, a plain `npm ci`) does not show by itself.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

const root = new URL('..', import.meta.url).pathname;

/**
 * Each dependency that has an install script, and why the project works without running it. A new
 * dependency with a script fails this test until someone checks that it works skipped.
 */
const SKIPPED_INSTALL_SCRIPTS: Record<string, string> = {
  'onnxruntime-node': 'downloads CUDA parts from outside the registry; its CPU library ships in the package',
  esbuild: 'verifies its platform binary, which npm installs as an optional dependency (@esbuild/<platform>)',
  'classic-level': 'node-gyp-build finds the prebuilt binaries shipped in the package at run time',
  usearch: 'node-gyp-build finds the prebuilt binaries shipped in the package (linux-x64, linux-arm64, darwin) at run time',
  'core-js': 'prints a message',
  protobufjs: 'checks the versions of its optional CLI',
};

describe('set-up: a plain npm ci', () => {
  it('runs no dependency install script, on npm 10 and 11 alike (.npmrc, not an environment variable)', () => {
    const npmrc = readFileSync(`${root}.npmrc`, 'utf8');
    assert.match(npmrc, /^ignore-scripts=true$/m);
    const ci = readFileSync(`${root}.ci/run`, 'utf8');
    assert.doesNotMatch(ci, /ONNXRUNTIME_NODE_INSTALL/, 'CI installs as the README says, with no variable to hide a failure');
  });

  it('every dependency with an install script is known to work without it', () => {
    const lock = JSON.parse(readFileSync(`${root}package-lock.json`, 'utf8')) as {
      packages: Record<string, { hasInstallScript?: boolean }>;
    };
    const withScripts = Object.entries(lock.packages)
      .filter(([, p]) => p.hasInstallScript)
      .map(([path]) => path.replace(/^.*node_modules\//, ''));
    assert.ok(withScripts.length > 0, 'the lockfile lists install scripts (onnxruntime-node has one)');
    const unreviewed = withScripts.filter((name) => !(name in SKIPPED_INSTALL_SCRIPTS));
    assert.deepEqual(unreviewed, [], 'new dependencies with install scripts: check they work skipped, then list them here');
  });

  it('every installed package supports this Node (no EBADENGINE at install)', () => {
    const lock = JSON.parse(readFileSync(`${root}package-lock.json`, 'utf8')) as {
      packages: Record<string, { engines?: { node?: string }; dev?: boolean }>;
    };
    const major = Number(process.versions.node.split('.')[0]);
    const tooNew = Object.entries(lock.packages)
      .filter(([path, p]) => path && /^>=\s*(\d+)/.test(p.engines?.node ?? '') && Number(/^>=\s*(\d+)/.exec(p.engines!.node!)![1]) > major)
      .map(([path, p]) => `${path} (node ${p.engines!.node})`);
    assert.deepEqual(tooNew, [], `packages that need a newer Node than ${process.versions.node}: pin or override them`);
  });

  it('npx effitag --help prints the help and no npm warning', () => {
    const out = spawnSync('npm', ['exec', '--no', '--', 'effitag', '--help'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    assert.equal(out.status, 0, out.stderr);
    assert.match(out.stdout, /^Usage: effitag/m);
    assert.doesNotMatch(out.stderr, /npm warn/i, out.stderr);
  });
});
