"""The test data is self-contained: tests/data holds exactly the files its README lists,
byte for byte, and no test reaches for a path outside the repository."""
import hashlib
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
DATA = TESTS / 'data'
# Spelled in pieces so that this file does not match its own patterns.
OUTSIDE = re.compile('|'.join([r'/wo' r'rk/', r'\.\./sha' r'red', r'MMSSM_SHA' r'RED_DIR',
                               r'shared_' r'dir\(', r'/ho' r'me/', r'/tm' r'p/']))


def listed_checksums():
    text = (DATA / 'README.md').read_text()
    block = text.split('## Checksums (sha256)', 1)[1]
    return dict(reversed(line.split('  ', 1)) for line in block.splitlines()
                if re.match(r'^[0-9a-f]{64}  ', line))


def test_data_files_match_the_readme():
    listed = listed_checksums()
    present = {str(p.relative_to(DATA)) for p in DATA.rglob('*') if p.is_file()} - {'README.md'}
    assert listed and set(listed) == present
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name
    for family in ('vmamba', 'msvmamba', 'efficientvmamba', 'mobilemamba', 'vim'):
        for kind in ('fixture', 'cls_fixture'):
            assert f'fixtures/{family}/{kind}.pt' in listed


def test_no_test_names_a_path_outside_the_repository():
    offenders = []
    for path in sorted(TESTS.rglob('*.py')):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f'{path.relative_to(TESTS)}:{number}: {line.strip()}')
    assert not offenders, '\n'.join(offenders)
