/**
 * The docs follow the code: every relative link in README.md, cdk/README.md and docs/*.md resolves (the file, and
 * for `#anchor` a heading of it, slugged as GitHub slugs headings), and every `effitag …` example in
 * them names a real command with real options of the CLI. The CLI is read from the program
 * `buildProgram()` builds (cli/program.ts); no example is run.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, it } from 'node:test';
import type { Command, Option } from 'commander';
import { buildProgram } from '../cli/program.ts';

const root = join(import.meta.dirname, '..');
const pages = [
  'README.md',
  'cdk/README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`),
];

interface Line {
  page: string;
  line: number;
  text: string;
  /** Inside a fenced code block, and that block's info string (`sh`, `json`, …). */
  fence?: string;
}

function linesOf(page: string): Line[] {
  const out: Line[] = [];
  let fence: string | undefined;
  readFileSync(join(root, page), 'utf8')
    .split('\n')
    .forEach((text, i) => {
      const open = /^\s*```(.*)$/.exec(text);
      if (open) {
        fence = fence === undefined ? open[1].trim() || 'text' : undefined;
        return;
      }
      out.push({ page, line: i + 1, text, fence });
    });
  return out;
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
export function slugs(page: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const { text, fence } of linesOf(page)) {
    const m = fence === undefined ? /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(text) : null;
    if (!m) continue;
    const base = m[1]
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Markdown links and images outside code: `[text](target)`, `![alt](target)`. */
function linksOf(page: string): { line: number; target: string }[] {
  const out: { line: number; target: string }[] = [];
  for (const { text, line, fence } of linesOf(page)) {
    if (fence !== undefined) continue;
    const prose = text.replace(/`[^`]*`/g, '');
    for (const m of prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) out.push({ line, target: m[1] });
  }
  return out;
}

/** Why a link does not resolve, or undefined when it does. */
function brokenLink(page: string, target: string): string | undefined {
  if (/^[a-z]+:/i.test(target)) return undefined; // https:, mailto: — outside the tree
  const [path, anchor] = target.split('#', 2);
  const file = path === '' ? join(root, page) : join(root, dirname(page), decodeURIComponent(path));
  if (!file.startsWith(root)) return `${target} leaves the repository`;
  if (!existsSync(file)) return `${target}: no such file ${relative(root, file)}`;
  if (anchor === undefined) return undefined;
  if (!statSync(file).isFile() || !file.endsWith('.md')) return `${target}: an anchor into something that is not a Markdown page`;
  const known = slugs(relative(root, file));
  return known.has(anchor) ? undefined : `${target}: ${relative(root, file)} has no heading #${anchor}`;
}

/** Shell words, quotes removed; `# comment` dropped; `;`, `&&`, `||` and `|` outside `[…]` as words of their own. */
function words(command: string): string[] {
  const out: string[] = [];
  let word = '';
  let quote = '';
  let started = false;
  const end = () => {
    if (started) out.push(word);
    word = '';
    started = false;
  };
  for (let i = 0; i < command.length; i++) {
    const c = command[i];
    if (quote) {
      if (c === quote) quote = '';
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      started = true;
    } else if (/\s/.test(c)) end();
    else if (c === '#' && !started) break;
    else if (c === ';' || c === '|' || c === '&') {
      end();
      out.push(c === '&' || c === '|' ? (command[i + 1] === c ? c + command[++i] : c) : c);
    } else {
      word += c;
      started = true;
    }
  }
  end();
  return out;
}

interface Example {
  page: string;
  line: number;
  text: string;
}

/**
 * `npx effitag …` wherever it is written (code blocks and inline code), and a code block's lines that
 * start with `effitag …`; a line ending in `\` continues on the next.
 */
function examplesOf(page: string): Example[] {
  const out: Example[] = [];
  const lines = linesOf(page);
  for (let i = 0; i < lines.length; i++) {
    const { text, line, fence } = lines[i];
    const chunks =
      fence === undefined
        ? [...text.matchAll(/`(npx effitag[^`]*)`/g)].map((m) => m[1])
        : /^\s*(?:npx )?effitag\b|\bnpx effitag\b/.test(text)
          ? [text.slice(text.search(/(?:npx )?effitag\b/))]
          : [];
    for (let chunk of chunks) {
      let j = i;
      while (fence !== undefined && /\\\s*$/.test(chunk) && j + 1 < lines.length) chunk = chunk.replace(/\\\s*$/, ' ') + lines[++j].text;
      out.push({ page, line, text: chunk.trim() });
    }
  }
  return out;
}

/** Why an example does not fit the CLI, or undefined when every command and option it names exists. */
export function misfit(program: Command, example: string): string | undefined {
  const all = words(example);
  const start = all.indexOf('effitag');
  let command = program;
  const path: Command[] = [program];
  let depth = 0; // inside `[…]`: optional parts of a synopsis
  for (let i = start + 1; i < all.length; i++) {
    let w = all[i];
    if ([';', '&&', '||'].includes(w) || (w === '|' && depth === 0)) break;
    const opens = (w.match(/\[/g) ?? []).length;
    const closes = (w.match(/\]/g) ?? []).length;
    w = w.replace(/[[\]]/g, '');
    depth += opens - closes;
    if (w === '' || w === '|' || w === '…' || w === '...') continue;
    if (w.startsWith('-') && w !== '-') {
      const [flag, inline] = w.split('=', 2);
      if (['--help', '-h'].includes(flag)) return undefined;
      // An option of this command or of any command above it (commander reads a parent's options after a subcommand too).
      const option = path
        .flatMap((c) => c.options as Option[])
        .find((o) => o.long === flag || o.short === flag || (o.negate && o.long === flag));
      if (!option) {
        const known = path.flatMap((c) => (c.options as Option[]).map((o) => o.long ?? o.short));
        return `${commandName(command)} has no option ${flag} (it has: ${known.join(' ') || 'none'})`;
      }
      const next = all[i + 1]?.replace(/[[\]]/g, '');
      if (inline === undefined && option.required) i++;
      else if (inline === undefined && option.optional && next !== undefined && !next.startsWith('-') && next !== '|') i++;
      if (inline === undefined && (option.required || option.optional))
        depth += (all[i].match(/\[/g) ?? []).length - (all[i].match(/\]/g) ?? []).length;
      continue;
    }
    const sub = command.commands.find((c) => c.name() === w || c.aliases().includes(w));
    if (sub) {
      command = sub;
      path.push(sub);
    } else if (command.commands.length > 0 && command === program) {
      return `no command "${w}" (commands: ${program.commands.map((c) => c.name()).join(', ')})`;
    } else if (
      command.commands.length > 0 &&
      !(command as unknown as { _defaultCommandName?: string })._defaultCommandName &&
      // A command with subcommands and operands of its own (`dupes TARGET`, `dupes calibrate`) takes the word as an operand.
      !command.registeredArguments.length
    ) {
      return `${commandName(command)} has no subcommand "${w}" (it has: ${command.commands.map((c) => c.name()).join(', ')})`;
    }
  }
  // A bare `npx effitag` (as in "the `npx effitag` commands") prints the help: nothing to check.
  return undefined;
}

function commandName(c: Command): string {
  const names: string[] = [];
  for (let at: Command | null = c; at?.parent; at = at.parent) names.unshift(at.name());
  return `effitag ${names.join(' ')}`.trim();
}

describe('docs: README.md and docs/*.md follow the tree and the CLI', () => {
  it('every relative link resolves: the file, and the heading an #anchor names', () => {
    const broken: string[] = [];
    let count = 0;
    for (const page of pages)
      for (const { line, target } of linksOf(page)) {
        count++;
        const why = brokenLink(page, target);
        if (why) broken.push(`${page}:${line}: ${why}`);
      }
    assert.ok(count >= 20, `the pages link to each other (${count} links found)`);
    assert.deepEqual(broken, []);
  });

  it('every page of docs/ is linked from the README', () => {
    const linked = new Set(linksOf('README.md').map((l) => l.target.split('#')[0]));
    const unlinked = pages.filter((p) => p.startsWith('docs/') && !linked.has(p));
    assert.deepEqual(unlinked, []);
  });

  it('every effitag example names a real command and real options (read from buildProgram, nothing run)', () => {
    const program = buildProgram();
    const wrong: string[] = [];
    const examples = pages.flatMap(examplesOf);
    for (const e of examples) {
      const why = misfit(program, e.text);
      if (why) wrong.push(`${e.page}:${e.line}: ${e.text}\n    ${why}`);
    }
    assert.ok(examples.length >= 30, `the docs show the CLI (${examples.length} examples found)`);
    assert.deepEqual(wrong, []);
  });

  it('the checks themselves catch a wrong command, a wrong option, a wrong file and a wrong heading', () => {
    const program = buildProgram();
    assert.match(misfit(program, 'npx effitag serach s3://b --tag dog') ?? '', /no command "serach"/);
    assert.match(misfit(program, 'npx effitag model list --jsno') ?? '', /has no option --jsno/);
    assert.match(misfit(program, 'npx effitag model lsit') ?? '', /no subcommand "lsit"/);
    assert.equal(misfit(program, 'npx effitag model list [--json]   # a comment --not-an-option'), undefined);
    assert.equal(misfit(program, 'for v in b0 b1; do npx effitag weights fetch "$v"; done'), undefined);
    assert.match(brokenLink('README.md', 'docs/no-such-page.md') ?? '', /no such file/);
    assert.match(brokenLink('README.md', 'docs/deploy.md#no-such-heading') ?? '', /has no heading/);
    assert.equal(brokenLink('docs/deploy.md', '../README.md#layout'), undefined);
  });

  it('every EFFITAG_* variable the docs name is one the code reads', () => {
    const code = execFileSync('git', ['ls-files', '*.ts', '*.mjs', '*.js', '.ci/run'], { cwd: root, encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((f) => (existsSync(join(root, f)) ? readFileSync(join(root, f), 'utf8') : ''))
      .join('\n');
    const named = new Set(
      pages.flatMap((page) => [...readFileSync(join(root, page), 'utf8').matchAll(/\bEFFITAG_[A-Z0-9_]*[A-Z0-9]\b/g)].map((m) => m[0])),
    );
    assert.ok(named.size >= 10, `the docs name the variables (${named.size} found)`);
    assert.deepEqual(
      [...named].filter((v) => !code.includes(v)),
      [],
    );
  });

  it('no hand-kept test counts (they go stale with every new test)', () => {
    const counted = pages.flatMap((page) =>
      linesOf(page)
        .filter((l) => /\b\d[\d,]* (?:tests|test cases)\b/.test(l.text))
        .map((l) => `${page}:${l.line}: ${l.text.trim()}`),
    );
    assert.deepEqual(counted, []);
  });
});
