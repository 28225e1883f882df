"""Narrow a cosmic-ray run (its .sqlite file) to the code under test, after `cosmic-ray init` and before
`cosmic-ray exec` (docs/testing.md):

    python .ci/mutation_filter.py RUN.sqlite MODULE.py --functions crop_flip,cutout --arithmetic basic

--functions  keep the mutants inside these functions or methods (names without the class);
--skip       drop those on source lines that match this regular expression (log lines, messages);
--arithmetic basic: an arithmetic operator becomes only +, -, * or // (not the bitwise and
             power operators, which no code here uses on numbers); swap: only its opposite
             (+ -, * /, // *, % //): one mutant per operator instead of twelve."""
import argparse
import re
import sqlite3

SWAP = {'Add': 'Sub', 'Sub': 'Add', 'Mul': 'Div', 'Div': 'Mul', 'FloorDiv': 'Mul', 'Mod': 'FloorDiv', 'Pow': 'Mul'}


def keep(operator, row, function, lines, args):
    if args.functions and function not in args.functions.split(','):
        return False
    if args.skip and re.search(args.skip, lines[row - 1]):
        return False
    if operator.startswith('core/ReplaceBinaryOperator_'):
        source, target = operator.split('_')[-2:]
        if args.arithmetic == 'basic':
            return target in ('Add', 'Sub', 'Mul', 'FloorDiv')
        if args.arithmetic == 'swap':
            return SWAP.get(source) == target
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('database')
    p.add_argument('module')
    p.add_argument('--functions', default=None)
    p.add_argument('--skip', default=None)
    p.add_argument('--arithmetic', choices=['all', 'basic', 'swap'], default='all')
    args = p.parse_args()
    lines = open(args.module).read().splitlines()
    db = sqlite3.connect(args.database)
    specs = db.execute('select job_id, operator_name, start_pos_row, definition_name from mutation_specs').fetchall()
    dropped = [(job,) for job, operator, row, function in specs if not keep(operator, row, function, lines, args)]
    db.executemany('delete from mutation_specs where job_id = ?', dropped)
    db.executemany('delete from work_items where job_id = ?', dropped)
    db.commit()
    print(f'{len(specs) - len(dropped)} of {len(specs)} mutants kept')


if __name__ == '__main__':
    main()
