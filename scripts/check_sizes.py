#!/usr/bin/env python3
"""check_sizes.py [ROOT] - fails when a file of runtime/ is over 800 lines
or a function in one of its .cc files is over 80 lines (STYLE.md: files
small enough to read in one sitting, long procedures split into named
phases). Prints each offender as FILE:LINE: what and how long; exits 1 if
there is any, else prints the counts and exits 0.

A function is a brace block at namespace level that is not a class,
struct, enum or union; it is counted from the first line of its signature
to its closing brace.
"""
import os
import re
import sys

MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 80


def strip(line):
    line = re.sub(r'//.*', '', line)
    line = re.sub(r'"([^"\\]|\\.)*"', '""', line)
    return re.sub(r"'([^'\\]|\\.)*'", "''", line)


def long_functions(path, lines):
    found = []
    depth = 0
    start = None
    for i, raw in enumerate(lines):
        code = strip(raw)
        if re.match(r'^\s*namespace\b.*\{\s*$', code) or re.match(r'^\}\s*//\s*namespace', raw):
            continue
        opens, closes = code.count('{'), code.count('}')
        if depth == 0 and opens > closes:
            if re.match(r'^\s*(class|struct|enum|union|extern)\b', code):
                start = None
            else:
                j = i
                while j > 0:
                    prev = lines[j - 1].strip()
                    if (not prev or prev.startswith('//') or prev.endswith(';')
                            or prev.endswith('}') or prev.endswith('{')
                            or prev.startswith('#')):
                        break
                    j -= 1
                start = j
        depth += opens - closes
        if depth == 0 and start is not None and closes > 0:
            n = i - start + 1
            if n > MAX_FUNCTION_LINES:
                found.append((start + 1, n, lines[start].strip()[:60]))
            start = None
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), '..')
    bad = 0
    files = 0
    for dirpath, _, names in os.walk(os.path.join(root, 'runtime'), followlinks=True):
        for name in sorted(names):
            if not name.endswith(('.h', '.cc')):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            with open(path, encoding='utf-8') as f:
                lines = f.read().split('\n')
            files += 1
            if len(lines) - 1 > MAX_FILE_LINES:
                print(f'{rel}: {len(lines) - 1} lines, more than {MAX_FILE_LINES}; '
                      'split it by what its parts do')
                bad += 1
            if name.endswith('.cc'):
                for line, n, sig in long_functions(path, lines):
                    print(f'{rel}:{line}: a function of {n} lines, more than '
                          f'{MAX_FUNCTION_LINES}: {sig}; split it into named phases')
                    bad += 1
    if bad:
        print(f'check_sizes: {bad} file(s) or function(s) too long')
        return 1
    print(f'check_sizes: {files} files, none over {MAX_FILE_LINES} lines, '
          f'no function over {MAX_FUNCTION_LINES}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
