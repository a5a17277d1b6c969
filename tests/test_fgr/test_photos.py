"""Photo gathering and HR crops: packaged sources (skimage, Debian .debs), bad photos, crop grid."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from finpercep_basicsr.fgr.photos import (OPENCV_DOC_DATA, PhotoSkipped, crop_starts, cut_crops, gather_photos,
                                          get_photos, load_photo_checked, opencv_doc_photos)
from finpercep_basicsr.fgr import deb_photos
from finpercep_basicsr.utils.errors import UserInputError

REAL_PLASMA_DEB = '/tmp/debs/plasma-workspace-wallpapers_4%3a5.27.5-2_all.deb'
REAL_LOMIRI_DEB = '/tmp/debchk/lomiri-wallpapers-16.04_20.04.0-2_all.deb'
REAL_MATE_DEB = '/tmp/debs/mate-backgrounds_1.26.0-1_all.deb'


def _bgr(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _bad_folder(folder):
    """One photo of each kind: good, gray, opaque RGBA, transparent RGBA, 16-bit, corrupt, tiny."""
    os.makedirs(folder, exist_ok=True)
    cv2.imwrite(os.path.join(folder, 'good.png'), _bgr(80, 96))
    cv2.imwrite(os.path.join(folder, 'gray.png'), _bgr(80, 96)[..., 0])
    rgba = np.dstack([_bgr(80, 96), np.full((80, 96), 255, np.uint8)])
    cv2.imwrite(os.path.join(folder, 'opaque.png'), rgba)
    rgba[0, 0, 3] = 10
    cv2.imwrite(os.path.join(folder, 'transparent.png'), rgba)
    cv2.imwrite(os.path.join(folder, 'deep.png'), _bgr(80, 96).astype(np.uint16) * 257)
    with open(os.path.join(folder, 'corrupt.jpg'), 'wb') as f:
        f.write(b'\xff\xd8\xff\xe0 truncated jpeg')
    cv2.imwrite(os.path.join(folder, 'tiny.png'), _bgr(20, 20))
    return folder


def test_load_photo_checked_policy(tmp_path):
    folder = _bad_folder(str(tmp_path / 'in'))
    good, notes = load_photo_checked(os.path.join(folder, 'good.png'))
    assert good.shape == (80, 96, 3) and good.dtype == np.float32 and notes == []
    gray, notes = load_photo_checked(os.path.join(folder, 'gray.png'))
    assert gray.shape == (80, 96, 3) and notes == ['grayscale: repeated to RGB']
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    opaque, notes = load_photo_checked(os.path.join(folder, 'opaque.png'))
    assert notes == ['opaque RGBA: alpha dropped']
    np.testing.assert_array_equal(opaque, good)
    deep, notes = load_photo_checked(os.path.join(folder, 'deep.png'))
    assert notes == ['16-bit: converted to 8-bit']
    np.testing.assert_allclose(deep, good, atol=1e-6)  # v * 257 / 65535 == v / 255
    for name, reason in (('transparent.png', 'transparent'), ('corrupt.jpg', 'corrupt')):
        with pytest.raises(PhotoSkipped, match=f'{name}.*{reason}'):
            load_photo_checked(os.path.join(folder, name))


def test_gather_skimage_and_a_user_folder(tmp_path):
    folder = _bad_folder(str(tmp_path / 'mine'))
    out = str(tmp_path / 'photos')
    with pytest.warns(UserWarning) as record:
        summary = gather_photos(out, sources=('skimage',), inputs=[folder], min_size=32)
    messages = ' '.join(str(w.message) for w in record)
    for bad in ('gray.png', 'deep.png', 'corrupt.jpg', 'transparent.png', 'tiny.png'):
        assert bad in messages  # every bad photo is named in a warning
    assert set(summary['skipped']) == {os.path.join(folder, f) for f in ('corrupt.jpg', 'transparent.png', 'tiny.png')}
    assert 'skimage_astronaut.png' in summary['written'] and 'mine_gray.png' in summary['written']
    rows = [json.loads(line) for line in open(os.path.join(out, 'sources.jsonl'))]
    licences = json.load(open(os.path.join(out, 'licences.json')))
    assert [r['file'] for r in rows] == summary['written'] and set(licences) == set(summary['written'])
    assert licences['skimage_astronaut.png'] == 'public domain' and licences['skimage_chelsea.png'] == 'CC0'
    astronaut = cv2.imread(os.path.join(out, 'skimage_astronaut.png'))
    np.testing.assert_array_equal(astronaut[..., ::-1], data.astronaut())  # lossless 8-bit RGB copy


def test_opencv_doc_extraction_from_a_deb(tmp_path):
    """The .deb handling (dpkg -x, no install) on a small stand-in package with the real layout."""
    pkg = tmp_path / 'pkg'
    photo_dir = pkg / OPENCV_DOC_DATA
    os.makedirs(photo_dir)
    os.makedirs(pkg / 'DEBIAN')
    (pkg / 'DEBIAN' / 'control').write_text('Package: opencv-doc\nVersion: 0.0-test\nArchitecture: all\n'
                                            'Maintainer: test <t@example.org>\nDescription: stand-in\n')
    cv2.imwrite(str(photo_dir / 'baboon.jpg'), _bgr(64, 64))
    cv2.imwrite(str(photo_dir / 'opencv-logo.png'), _bgr(64, 64))  # not in the photo list
    deb = str(tmp_path / 'opencv-doc_0.0-test_all.deb')
    subprocess.run(['dpkg-deb', '--build', str(pkg), deb], check=True, capture_output=True)
    records = opencv_doc_photos(str(tmp_path / 'work'), deb=deb)
    assert [r['name'] for r in records] == ['opencv_baboon']
    assert os.path.isfile(records[0]['path']) and 'Apache-2.0' in records[0]['licence']
    with pytest.raises(UserInputError, match='missing.deb'):
        opencv_doc_photos(str(tmp_path / 'work2'), deb=str(tmp_path / 'missing.deb'))


def test_crop_grid_and_pixels(tmp_path):
    assert crop_starts(100, 32, 32, 0) == [0, 32, 64, 68]
    assert crop_starts(100, 32, 32, 4) == [0, 32, 64]  # leftover of 4 px is not > min_size
    assert crop_starts(20, 32, 32, 0) == []
    folder = _bad_folder(str(tmp_path / 'in'))
    big = _bgr(100, 70, seed=3)
    cv2.imwrite(os.path.join(folder, 'big.png'), big)
    summary = cut_crops([folder], str(tmp_path / 'crops'), crop_size=32, stride=32, min_size=0)
    assert os.path.join(folder, 'tiny.png') in summary['skipped']
    rows = [json.loads(line) for line in open(tmp_path / 'crops' / 'crops.jsonl')]
    big_rows = [r for r in rows if r['photo'].endswith('big.png')]
    assert len(big_rows) == 4 * 3  # rows [0, 32, 64, 68] x cols [0, 32, 38]
    for row in big_rows:
        top, left, h, w = row['box']
        crop = cv2.imread(str(tmp_path / 'crops' / row['file']))
        np.testing.assert_array_equal(crop, big[top:top + h, left:left + w])
    with pytest.raises(UserInputError):
        cut_crops([folder], str(tmp_path / 'c2'), crop_size=0)


def test_get_photos_counts_photos_and_crops_and_names_bad_files(tmp_path):
    folder = _bad_folder(str(tmp_path / 'mine'))
    with pytest.warns(UserWarning, match='corrupt.jpg'):  # the warning names the file
        summary = get_photos(str(tmp_path / 'p'), ['none'], [folder], crops=str(tmp_path / 'c'), crop_size=48,
                             stride=48)
    # good, gray, opaque, 16-bit and tiny photos kept; 80x96 gives rows [0, 32] x cols [0, 48]; tiny < crop
    assert summary['photos']['written'] == 5 and summary['crops']['written'] == 4 * 4
    assert any(p.endswith('tiny.png') for p in summary['crops']['skipped'])
    with pytest.raises(UserInputError, match='nothing'):
        get_photos(str(tmp_path / 'q'), ['none'], [str(tmp_path / 'nothing')])


def _build_deb(tmp_path, package, files):
    """A small stand-in .deb of ``package`` holding ``files`` ({path in the package: bytes or image})."""
    pkg = tmp_path / f'{package}-pkg'
    os.makedirs(pkg / 'DEBIAN')
    (pkg / 'DEBIAN' / 'control').write_text(f'Package: {package}\nVersion: 0.0-test\nArchitecture: all\n'
                                            'Maintainer: test <t@example.org>\nDescription: stand-in\n')
    for rel, content in files.items():
        os.makedirs((pkg / rel).parent, exist_ok=True)
        if isinstance(content, np.ndarray):
            assert cv2.imwrite(str(pkg / rel), content)
        else:
            (pkg / rel).write_text(content)
    deb = str(tmp_path / f'{package}_0.0-test_all.deb')
    subprocess.run(['dpkg-deb', '--build', str(pkg), deb], check=True, capture_output=True)
    return deb


def test_plasma_wallpapers_from_a_deb(tmp_path, monkeypatch):
    """Only the listed photographs, one resolution each (the largest within max_width, true size names first),
    licence and author from metadata.json or metadata.desktop, the package's copyright; the work folder is a cache."""
    walls = deb_photos.PLASMA_DATA
    big = _bgr(100, 160, seed=1)
    deb = _build_deb(tmp_path, deb_photos.PLASMA_PACKAGE, {
        f'{walls}/Kite/metadata.json': json.dumps({'KPlugin': {
            'Authors': [{'Name': 'Risto Saukonpaa', 'Email': 'r@example.org'}], 'License': 'LGPLv3', 'Id': 'Kite'}}),
        f'{walls}/Kite/contents/images/80x50.png': _bgr(50, 80),
        f'{walls}/Kite/contents/images/160x100.png': big,
        f'{walls}/Kite/contents/images/40x25.png': big,  # a copy under another size's name, as in the package
        f'{walls}/Path/metadata.desktop': '[Desktop Entry]\nName=Path\nX-KDE-PluginInfo-Author=Someone\n'
                                          'X-KDE-PluginInfo-License=CC-BY-SA-4.0\n',
        f'{walls}/Path/contents/images/120x90.jpg': _bgr(90, 120, seed=2),
        f'{walls}/Altai/metadata.json': json.dumps({'KPlugin': {'License': 'CC-BY-SA-4.0'}}),  # artwork
        f'{walls}/Altai/contents/images/64x64.png': _bgr(64, 64),
        deb_photos.PLASMA_COPYRIGHT: 'Format: x\nUpstream-Name: plasma-workspace-wallpapers\n\nFiles: *\n'
                                     'Copyright: 2014 KDE Visual Design Group\nLicense: GPL-2+\n\n'
                                     'Files: debian/*\nCopyright: someone\nLicense: GPL-2+\n',
    })
    records = deb_photos.plasma_wallpaper_photos(str(tmp_path / 'w0'), deb=deb, max_width=0)
    assert [r['name'] for r in records] == ['plasma_Kite', 'plasma_Path']
    assert records[0]['path'].endswith('Kite/contents/images/160x100.png')
    assert records[0]['author'] == 'Risto Saukonpaa <r@example.org>' and records[1]['author'] == 'Someone'
    assert records[0]['licence'].startswith('LGPLv3 (wallpaper metadata') and 'CC-BY-SA-4.0' in records[1]['licence']
    assert 'GPL-2+ (2014 KDE Visual Design Group)' in records[0]['licence']
    out, work = str(tmp_path / 'photos'), str(tmp_path / 'work')
    summary = gather_photos(out, sources=('plasma-wallpapers',), workdir=work, plasma_deb=deb, plasma_max_width=100)
    assert summary['written'] == ['plasma_Kite.png', 'plasma_Path.png']
    rows = {r['name']: r for r in map(json.loads, open(os.path.join(out, 'sources.jsonl')))}
    assert (rows['plasma_Kite']['width'], rows['plasma_Kite']['height']) == (80, 50)  # 160 px is over max_width
    assert rows['plasma_Path']['author'] == 'Someone' and '80x50.png (80x50)' in rows['plasma_Kite']['source']
    # cached: with the .deb in the work folder, neither apt-get nor dpkg runs again
    cache = os.path.join(work, 'plasma-workspace-wallpapers')
    os.replace(deb, os.path.join(cache, os.path.basename(deb)))
    os.remove(os.path.join(cache, f'.unpacked-{os.path.basename(deb)}'))
    assert len(deb_photos.plasma_wallpaper_photos(cache, max_width=100)) == 2

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f'subprocess called: {args}')
    monkeypatch.setattr(deb_photos.subprocess, 'run', no_subprocess)
    assert [r['path'] for r in deb_photos.plasma_wallpaper_photos(cache, max_width=100)] == \
        [os.path.join(cache, 'tree', walls, 'Kite/contents/images/80x50.png'),
         os.path.join(cache, 'tree', walls, 'Path/contents/images/120x90.jpg')]
    with pytest.raises(UserInputError, match='--plasma_deb: file not found: .*missing.deb'):
        deb_photos.plasma_wallpaper_photos(str(tmp_path / 'w2'), deb=str(tmp_path / 'missing.deb'))
    with pytest.raises(UserInputError, match='unknown photo source.*plasma-wallpapers'):
        gather_photos(out, sources=('plasma',))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(REAL_PLASMA_DEB), reason='the Debian .deb is not on this machine')
def test_real_plasma_package_gives_its_ten_photographs(tmp_path):
    records = deb_photos.plasma_wallpaper_photos(str(tmp_path / 'w'), deb=REAL_PLASMA_DEB)
    assert [r['name'][len('plasma_'):] for r in records] == list(deb_photos.PLASMA_PHOTOS)
    for rec in records:
        assert rec['path'].endswith('/2560x1600.jpg') and '(2560x1600)' in rec['source']
        assert rec['licence'].startswith('LGPLv3 (wallpaper metadata') and 'GPL-2+' in rec['licence']
        assert rec['author'] not in ('', 'unknown')
    assert {r['author'] for r in records if 'Kite' in r['name']} == {'Risto Saukonpää <paristo@gmail.com>'}


def test_lomiri_wallpapers_from_a_deb(tmp_path):
    """Only the listed photographs, each with the License and Copyright of its own debian/copyright paragraph
    (over ``Files: *``); a photo wider than max_width is downscaled (area) when loaded; a missing .deb is exit 2."""
    back = deb_photos.LOMIRI_DATA
    wide = _bgr(40, 120, seed=4)
    deb = _build_deb(tmp_path, deb_photos.LOMIRI_PACKAGE, {
        f'{back}/Bridge_by_Sander_Klootwijk.jpg': wide,
        f'{back}/seeding_by_Clements_Engelhardt.jpg': _bgr(30, 50, seed=5),
        f'{back}/analogpattern_by_Peter_Nerlich.jpg': _bgr(30, 50),  # artwork: not in the list
        deb_photos.LOMIRI_COPYRIGHT: 'Format: x\nUpstream-Name: lomiri-wallpapers\n\n'
                                     'Files: *\nCopyright: Ubuntu community\nLicense: CC-BY-SA-3.0\n\n'
                                     'Files: 16.04/Bridge_by_Sander_Klootwijk.jpg\nCopyright: 2018. Sander Klootwijk\n'
                                     'License: CC-BY-SA-4.0\n\n'
                                     'Files: 16.04/seeding_by_Clements_Engelhardt.jpg\n'
                                     'Copyright: Clemens Engelhardt, 2018\n           2019, Someone Else\n'
                                     'License: CC0-1.0\n\nLicense: CC0-1.0\n Creative Commons Legal Code\n .\n CC0\n',
    })
    records = deb_photos.lomiri_wallpaper_photos(str(tmp_path / 'w0'), deb=deb, max_width=60)
    assert [r['name'] for r in records] == ['lomiri_Bridge', 'lomiri_seeding']
    assert records[0]['licence'].startswith('CC-BY-SA-4.0 (2018. Sander Klootwijk); package debian/copyright')
    assert records[1]['licence'].startswith('CC0-1.0 (Clemens Engelhardt, 2018; 2019, Someone Else);')
    assert records[0]['author'] == '2018. Sander Klootwijk' and records[0]['max_width'] == 60
    assert records[0]['source'].endswith('Bridge_by_Sander_Klootwijk.jpg (120x40, downscaled to 60 px wide when '
                                         'loaded), by 2018. Sander Klootwijk')
    assert 'downscaled' not in records[1]['source']
    out = str(tmp_path / 'photos')
    summary = gather_photos(out, sources=('lomiri-wallpapers',), workdir=str(tmp_path / 'work'), lomiri_deb=deb,
                            lomiri_max_width=60)
    assert summary['written'] == ['lomiri_Bridge.png', 'lomiri_seeding.png']
    rows = {r['name']: r for r in map(json.loads, open(os.path.join(out, 'sources.jsonl')))}
    assert (rows['lomiri_Bridge']['width'], rows['lomiri_Bridge']['height']) == (60, 20)
    assert rows['lomiri_Bridge']['notes'] == ['downscaled from 120x40 to 60x20 (area interpolation, max_width 60)']
    assert (rows['lomiri_seeding']['width'], rows['lomiri_seeding']['height']) == (50, 30)
    assert rows['lomiri_seeding']['notes'] == [] and rows['lomiri_seeding']['author'].startswith('Clemens')
    jpg = cv2.imread(rows['lomiri_Bridge']['origin'])  # area interpolation: the mean of each 2x2 block
    np.testing.assert_allclose(cv2.imread(os.path.join(out, 'lomiri_Bridge.png')),
                               cv2.resize(jpg, (60, 20), interpolation=cv2.INTER_AREA), atol=1)
    licences = json.load(open(os.path.join(out, 'licences.json')))
    assert licences['lomiri_seeding.png'].startswith('CC0-1.0 (Clemens Engelhardt')
    with pytest.raises(UserInputError, match='--lomiri_deb: file not found: '):
        get_photos(str(tmp_path / 'q'), ['lomiri-wallpapers'], lomiri_deb=str(tmp_path / 'missing.deb'))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(REAL_LOMIRI_DEB), reason='the Debian .deb is not on this machine')
def test_real_lomiri_package_gives_its_thirteen_photographs(tmp_path):
    records = deb_photos.lomiri_wallpaper_photos(str(tmp_path / 'w'), deb=REAL_LOMIRI_DEB)
    assert [r['name'] for r in records] == [f'lomiri_{s.split("_by_")[0]}' for s in deb_photos.LOMIRI_PHOTOS]
    assert len(records) == 13
    for rec in records:
        assert rec['licence'].split(' (')[0] in ('CC-BY-4.0', 'CC-BY-SA-4.0', 'CC0-1.0') and '2018' in rec['author']
    assert {r['licence'].split(';')[0] for r in records if 'Wine' in r['name']} == {'CC-BY-4.0 (Jakub Mede, 2018)'}


def test_mate_backgrounds_from_a_deb(tmp_path):
    """The nature/ photographs only, each with its own debian/copyright paragraph, downscaled past max_width; the
    source name selects them in gather_photos and the command line."""
    nature = deb_photos.MATE_DATA
    deb = _build_deb(tmp_path, deb_photos.MATE_PACKAGE, {
        f'{nature}/Storm.jpg': _bgr(40, 120, seed=6),
        f'{nature}/Wood.jpg': _bgr(30, 50, seed=7),
        'usr/share/backgrounds/mate/abstract/Silk.png': _bgr(30, 50),  # artwork: another folder
        f'{nature}/Unlisted.jpg': _bgr(30, 50),
        deb_photos.MATE_COPYRIGHT: 'Format: x\nUpstream-Name: MATE Backgrounds\n\n'
                                   'Files: *\nCopyright: MATE\nLicense: GPL-2+\n\n'
                                   'Files: nature/Storm.jpg\nCopyright: 2008, Sergey Nazarov\nLicense: GPL-2+\n\n'
                                   'Files: nature/Wood.jpg\nCopyright: 2008, J-F Fortin Tam\nLicense: GPL-2+\n',
    })
    records = deb_photos.mate_background_photos(str(tmp_path / 'w'), deb=deb, max_width=60)
    assert [r['name'] for r in records] == ['mate_Storm', 'mate_Wood']
    assert records[0]['licence'] == 'GPL-2+ (2008, Sergey Nazarov); package debian/copyright, Files: nature/Storm.jpg'
    assert records[0]['source'].endswith('Storm.jpg (120x40, downscaled to 60 px wide when loaded), by 2008, '
                                         'Sergey Nazarov')
    out = str(tmp_path / 'photos')
    summary = gather_photos(out, sources=('mate-backgrounds',), workdir=str(tmp_path / 'work'), mate_deb=deb,
                            mate_max_width=60)
    assert summary['written'] == ['mate_Storm.png', 'mate_Wood.png']
    assert cv2.imread(os.path.join(out, 'mate_Storm.png')).shape == (20, 60, 3)
    script = os.path.join(os.path.dirname(__file__), '..', '..', 'scripts', 'get_photos.py')
    cli_out = str(tmp_path / 'cli')
    subprocess.run([sys.executable, script, '--out', cli_out, '--source', 'mate-backgrounds', '--mate_deb', deb,
                    '--mate_max_width', '50', '--workdir', str(tmp_path / 'work2')], check=True, capture_output=True)
    assert cv2.imread(os.path.join(cli_out, 'mate_Storm.png')).shape == (17, 50, 3)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(REAL_MATE_DEB), reason='the Debian .deb is not on this machine')
def test_real_mate_package_gives_its_twelve_photographs(tmp_path):
    records = deb_photos.mate_background_photos(str(tmp_path / 'w'), deb=REAL_MATE_DEB)
    assert [r['name'] for r in records] == [f'mate_{s}' for s in deb_photos.MATE_PHOTOS]
    assert all(r['licence'].startswith('GPL-2+ (') and r['author'] != 'unknown' for r in records)
