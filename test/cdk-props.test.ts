/**
 * The CDK constructs' props read as aws-cdk-lib's own: every property `readonly`, and every optional
 * one says with `@default` what happens without it. Read from the sources with the TypeScript
 * compiler's parser (no synthesis).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import ts from 'typescript';

const root = join(import.meta.dirname, '..');
const files = [
  ...readdirSync(join(root, 'cdk/constructs'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => `cdk/constructs/${f}`),
  'cdk/config.ts',
  'cdk/effitag-stack.ts',
];

interface Prop {
  where: string;
  readonly: boolean;
  optional: boolean;
  defaultDoc: boolean;
}

/** The properties of every exported interface of a file, with their modifiers and JSDoc tags. */
export function interfaceProps(file: string, text: string): Prop[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out: Prop[] = [];
  for (const node of source.statements) {
    if (!ts.isInterfaceDeclaration(node) || !node.modifiers?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword)) continue;
    for (const member of node.members) {
      if (!ts.isPropertySignature(member)) continue;
      out.push({
        where: `${file} ${node.name.text}.${member.name.getText(source)}`,
        readonly: member.modifiers?.some((m) => m.kind === ts.SyntaxKind.ReadonlyKeyword) ?? false,
        optional: member.questionToken !== undefined,
        defaultDoc: ts.getJSDocTags(member).some((t) => t.tagName.text === 'default'),
      });
    }
  }
  return out;
}

describe('CDK construct props: readonly, with @default docs', () => {
  const props = files.flatMap((f) => interfaceProps(f, readFileSync(join(root, f), 'utf8')));

  it('finds the props of the constructs and the stack', () => {
    for (const name of [
      'BackfillProps',
      'CpuTierProps',
      'GpuTierProps',
      'IngestProps',
      'ObservabilityProps',
      'TierQueueProps',
      'EffiTagStackProps',
    ])
      assert.ok(
        props.some((p) => p.where.includes(` ${name}.`)),
        `${name} read`,
      );
  });

  it('every property is readonly', () => {
    assert.deepEqual(
      props.filter((p) => !p.readonly).map((p) => p.where),
      [],
    );
  });

  it('every optional property documents its default with @default', () => {
    assert.deepEqual(
      props.filter((p) => p.optional && !p.defaultDoc).map((p) => p.where),
      [],
    );
  });

  it('the reading itself tells a mutable or undocumented property apart', () => {
    const [plain, documented] = interfaceProps(
      'x.ts',
      'export interface P {\n  a?: number;\n  /**\n   * B.\n   * @default 5\n   */\n  readonly b?: number;\n}\n',
    );
    assert.deepEqual([plain.readonly, plain.defaultDoc, documented.readonly, documented.defaultDoc], [false, false, true, true]);
  });
});
