"""README.md and docs/: every relative link, image and anchor resolves; each report block equals
what `reproduce.py report` makes from the records in results/; no path outside the project."""
import glob
import os
import re

import pytest

import reproduce

ROOT = reproduce.ROOT
DOCUMENTS = [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')  # [text](target) and ![alt](target)
BLOCK = re.compile(r'^<!-- reproduce\.py report (\S+) -->\n(.*?)^<!-- end of report -->$', re.M | re.S)


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(path):
    text = re.sub(r'^```.*?^```', '', open(path).read(), flags=re.M | re.S)  # no headings inside code
    return {slug(line.lstrip('#')) for line in text.splitlines() if line.startswith('#')}


def links(path):
    text = re.sub(r'^```.*?^```', '', open(path).read(), flags=re.M | re.S)
    return [target for target in LINK.findall(text) if not re.match(r'[a-z]+:', target)]


def test_slug_is_githubs():
    assert slug('S-FC at α = 8 on all the data') == 's-fc-at-α--8-on-all-the-data'
    assert slug('Fast AutoAugment against crop + flip') == 'fast-autoaugment-against-crop--flip'


@pytest.mark.parametrize('path', DOCUMENTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_links_images_and_anchors_resolve(path):
    assert links(path) or not path.endswith('README.md'), 'README.md: no links found'
    for target in links(path):
        file, _, anchor = target.partition('#')
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        assert resolved.startswith(ROOT + os.sep), f'{path}: {target} leaves the project'
        assert os.path.exists(resolved), f'{path}: {target} does not exist'
        if anchor:
            assert anchor in anchors(resolved), f'{path}: {target}: no such heading in {os.path.basename(resolved)}'


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# Title\n\n[a](missing.md) ![b](images/x.png) [c](#title) [d](https://example.org)\n'
                    '```\n[not a link](nowhere.md)\n```\n')
    assert links(str(page)) == ['missing.md', 'images/x.png', '#title']
    assert anchors(str(page)) == {'title'}


@pytest.mark.parametrize('path', DOCUMENTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_report_blocks_equal_the_report_of_results(path, tmp_path):
    """A table between report markers is what `reproduce.py report EXPERIMENT --runs-dir results
    --into FILE` writes there: regenerated from the committed records, it must be the same."""
    for experiment, block in BLOCK.findall(open(path).read()):
        folder = os.path.join(ROOT, 'results', reproduce.FOLDERS.get(experiment, experiment))
        text = reproduce.report(experiment, folder, out_dir=str(tmp_path))
        assert block.rstrip('\n') == text.rstrip('\n'), (
            f'{path}: the {experiment} table differs from its records; run: '
            f'python reproduce.py report {experiment} --runs-dir results --into {os.path.relpath(path, ROOT)}')


def test_results_md_shows_the_cpu_claim_report():
    assert 'cpu-claim' in BLOCK.findall(open(os.path.join(ROOT, 'docs', 'results.md')).read())[0]


def test_write_into_replaces_only_its_block(tmp_path, capsys):
    page = tmp_path / 'page.md'
    page.write_text('intro\n<!-- reproduce.py report tiny -->\nold\ntable\n<!-- end of report -->\noutro\n')
    reproduce.write_into(str(page), 'tiny', 'new table\n')
    assert page.read_text() == 'intro\n<!-- reproduce.py report tiny -->\nnew table\n<!-- end of report -->\noutro\n'
    with pytest.raises(SystemExit) as e:
        reproduce.write_into(str(page), 'other', 'x')
    assert e.value.code == 2 and 'no "<!-- reproduce.py report other -->" line' in capsys.readouterr().err


def test_no_path_outside_the_project():
    """Code, tests and docs name no folder outside the checkout (the data comes through BLASSO_DATA)."""
    files = DOCUMENTS + glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, 'tests', '*.py'))
    outside = re.compile(r'\.\./shared|\.\./data\b')
    for path in files:
        if path == os.path.abspath(__file__):
            continue
        for number, line in enumerate(open(path), 1):
            assert not outside.search(line), f'{os.path.relpath(path, ROOT)}:{number}: {line.strip()}'
