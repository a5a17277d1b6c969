"""Photos packaged by Debian: ``opencv-doc`` sample photos, ``plasma-workspace-wallpapers``,
``lomiri-wallpapers-16.04`` and ``mate-backgrounds`` photographs.

Each package is fetched with ``apt-get download`` (or given as a .deb) and unpacked with ``dpkg -x``
(nothing is installed) into a work folder. The work folder is a cache: a .deb found there is used
instead of downloading, and a tree already unpacked from that .deb is not unpacked again. Each function
returns records (dict: path, name, source, licence; plasma, lomiri and mate add author, lomiri and mate
max_width)
for ``photos.gather_photos``.
"""
import glob
import json
import os
import re
import subprocess

from finpercep_basicsr.utils.errors import UserInputError

# Debian opencv-doc's sample photographs (examples/data); logos, drawings, paintings, synthetic
# shapes, grayscale and motion-blurred test images are left out
OPENCV_DOC_PHOTOS = ('aero1.jpg', 'aloeL.jpg', 'apple.jpg', 'baboon.jpg', 'board.jpg', 'building.jpg', 'butterfly.jpg',
                     'ela_original.jpg', 'fruits.jpg', 'graf1.png', 'home.jpg', 'left.jpg', 'leuvenA.jpg', 'messi5.jpg',
                     'orange.jpg', 'rubberwhale1.png', 'smarties.png', 'squirrel_cls.jpg', 'stuff.jpg')
OPENCV_DOC_LICENCE = ('OpenCV sample data as distributed in Debian opencv-doc (debian/copyright: Apache-2.0 AND '
                      'BSD-3-Clause); original photographers not documented, baboon/fruits are classic USC-SIPI '
                      'test images')
OPENCV_DOC_DATA = 'usr/share/doc/opencv-doc/examples/data'

PLASMA_PACKAGE = 'plasma-workspace-wallpapers'
PLASMA_DATA = 'usr/share/wallpapers'
PLASMA_COPYRIGHT = f'usr/share/doc/{PLASMA_PACKAGE}/copyright'
# The photographs among the package's wallpapers (5.27.5), each checked by eye on a downscaled copy;
# the others are artwork (rendered or drawn). MilkyWay is a rendered abstract despite its name: left out.
PLASMA_PHOTOS = ('BytheWater', 'ColdRipple', 'ColorfulCups', 'EveningGlow', 'FallenLeaf', 'Grey', 'Kite',
                 'OneStandsOut', 'Path', 'summer_1am')
PLASMA_MAX_WIDTH = 3840

LOMIRI_PACKAGE = 'lomiri-wallpapers-16.04'
LOMIRI_DATA = 'usr/share/backgrounds'
LOMIRI_COPYRIGHT = f'usr/share/doc/{LOMIRI_PACKAGE}/copyright'
LOMIRI_SOURCE_DIR = '16.04'  # the folder of the images in the source tree, as named by its Files paragraphs
# The photographs among the package's wallpapers (20.04.0-2), each checked by eye; analogpattern and
# umang are artwork: left out
LOMIRI_PHOTOS = ('Bridge_by_Sander_Klootwijk', 'Dragonfly_by_Bolly', 'Picture_0B_by_freespace',
                 'Picture_1A_by_freespace', 'Wine_by_Jakkub_Mede', 'aitzgorri_by_Aitzol_Berasategi',
                 'free_by_Peter_Nerlich', 'friends_by_Aitzol_Berasategi', 'greentock_by_Peter_Nerlich',
                 'life_by_Aitzol_Berasategi', 'picosdeeuropa_by_Aitzol_Berasategi', 'seeding_by_Clements_Engelhardt',
                 'sunset_by_Aitzol_Berasategi')
LOMIRI_MAX_WIDTH = 2560  # the photos are up to 5312 px wide; wider ones are downscaled when loaded

MATE_PACKAGE = 'mate-backgrounds'
MATE_DATA = 'usr/share/backgrounds/mate/nature'
MATE_COPYRIGHT = f'usr/share/doc/{MATE_PACKAGE}/copyright'
MATE_SOURCE_DIR = 'nature'
# The package's nature/ folder (1.26.0-1): twelve photographs (checked by eye), GPL-2+ each; its abstract/ and
# desktop/ folders are artwork. The hacking benchmark's test split, so no value is ever chosen on them.
MATE_PHOTOS = ('Aqua', 'Blinds', 'Dune', 'FreshFlower', 'Garden', 'GreenMeadow', 'LadyBird', 'RainDrops', 'Storm',
               'TwoWings', 'Wood', 'YellowFlower')
# 1280-2560 px wide; at 640 a 128 px crop holds an object's worth of structure, as in the 512 px dev photos
MATE_MAX_WIDTH = 640


def _apt_download(package, folder):
    cmd = ['apt-get', 'download', package]
    result = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        # a stale package list is the usual cause; refresh once and retry
        subprocess.run(['apt-get', 'update'], capture_output=True, text=True)
        result = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    debs = glob.glob(os.path.join(folder, f'{package}_*.deb'))
    if result.returncode != 0 or not debs:
        raise UserInputError(f'apt-get download {package} failed: {result.stderr.strip()[-500:]}')
    return debs[0]


def unpack_deb(package, workdir, deb=None, flag='--deb'):
    """Unpack a package's .deb into ``workdir/tree``; returns (deb path, tree path).

    Args:
        package (str): Debian package name.
        workdir (str): Cache folder for the .deb and its tree.
        deb (str | None): A downloaded .deb; None = one already in ``workdir``, else ``apt-get download``.
        flag (str): The option that gave ``deb``, for the error message.
    """
    os.makedirs(workdir, exist_ok=True)
    if deb is None:
        cached = sorted(glob.glob(os.path.join(workdir, f'{package}_*.deb')))
        deb = cached[-1] if cached else _apt_download(package, workdir)
    elif not os.path.isfile(deb):
        raise UserInputError(f'{flag}: file not found: {deb}')
    tree = os.path.join(workdir, 'tree')
    stamp = os.path.join(workdir, f'.unpacked-{os.path.basename(deb)}')
    if not os.path.isfile(stamp):
        result = subprocess.run(['dpkg', '-x', deb, tree], capture_output=True, text=True)
        if result.returncode != 0:
            raise UserInputError(f'dpkg -x {deb} failed: {result.stderr.strip()[-500:]}')
        open(stamp, 'w').close()
    return deb, tree


def opencv_doc_photos(workdir, deb=None):
    """Records of the Debian opencv-doc photos, extracted (``dpkg -x``, no install) into ``workdir``.

    Args:
        workdir (str): Folder for the .deb and its extracted tree (reused when run again).
        deb (str | None): An already downloaded ``opencv-doc_*.deb``; None = ``apt-get download``.
    """
    deb, tree = unpack_deb('opencv-doc', workdir, deb, flag='--opencv-deb')
    folder = os.path.join(tree, OPENCV_DOC_DATA)
    version = os.path.basename(deb)
    return [dict(path=os.path.join(folder, f), name=f'opencv_{os.path.splitext(f)[0]}',
                 source=f'Debian {version}: {OPENCV_DOC_DATA}/{f}', licence=OPENCV_DOC_LICENCE)
            for f in OPENCV_DOC_PHOTOS if os.path.isfile(os.path.join(folder, f))]


def wallpaper_metadata(folder):
    """(licence, author) of a Plasma wallpaper from its ``metadata.json`` or ``metadata.desktop``."""
    path = os.path.join(folder, 'metadata.json')
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            plugin = json.load(f).get('KPlugin', {})
        authors = [a.get('Name', '') + (f' <{a["Email"]}>' if a.get('Email') else '')
                   for a in plugin.get('Authors', [])]
        return plugin.get('License', 'unknown'), ', '.join(authors) or 'unknown'
    fields = {}
    path = os.path.join(folder, 'metadata.desktop')
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            fields = dict(line.strip().split('=', 1) for line in f if '=' in line and not line.startswith('#'))
    author = fields.get('X-KDE-PluginInfo-Author', 'unknown')
    if fields.get('X-KDE-PluginInfo-Email'):
        author += f' <{fields["X-KDE-PluginInfo-Email"]}>'
    return fields.get('X-KDE-PluginInfo-License', 'unknown'), author


def copyright_paragraphs(path):
    """The paragraphs of a machine-readable debian/copyright, each a dict field -> value.

    A value keeps its continuation lines, joined by newlines with their leading space removed (so
    ``License`` is the short name, then the licence text; ``Files`` is whitespace-separated patterns).
    """
    with open(path, encoding='utf-8') as f:
        text = f.read()
    paragraphs = []
    for block in re.split(r'\n[ \t]*\n', text):  # blank lines, also ones holding only spaces
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (' ', '\t') and key:
                fields[key] += '\n' + line.strip()
            elif ':' in line and not line.startswith('#'):
                key, value = line.split(':', 1)
                fields[key] = value.strip()
        if fields:
            paragraphs.append(fields)
    return paragraphs


def _files_match(pattern, path):
    # copyright-format 1.0: '*' matches any characters (also '/'), '?' one; nothing else is special
    return re.fullmatch(re.escape(pattern).replace(r'\*', '.*').replace(r'\?', '.'), path) is not None


def covering_paragraph(paragraphs, file=None):
    """The ``Files`` paragraph that covers a file, or None.

    Args:
        paragraphs (list[dict]): From ``copyright_paragraphs``.
        file (str | None): A path in the package's source tree: the last paragraph whose ``Files``
            matches it (the format's rule: later paragraphs override); None = the ``Files: *`` one.
    """
    found = None
    for para in paragraphs:
        patterns = para.get('Files', '').split()
        covers = patterns == ['*'] if file is None else any(_files_match(p, file) for p in patterns)
        found = para if covers else found
    return found


def _holders(para):
    return '; '.join(para.get('Copyright', 'unknown').splitlines())


def _summary(para):
    """'<License> (<Copyright>)': the licence's short name (its first line) and the holders on one line."""
    return f'{(para.get("License") or "?").splitlines()[0]} ({_holders(para)})'


def debian_copyright(path, file=None):
    """'<License> (<Copyright>)' from a machine-readable debian/copyright, or why it is not stated.

    Args:
        path (str): The copyright file.
        file (str | None): A path in the source tree (see ``covering_paragraph``); None = ``Files: *``.
    """
    if not os.path.isfile(path):
        return 'not stated (no debian/copyright)'
    para = covering_paragraph(copyright_paragraphs(path), file)
    if para is None:
        return f'not stated (no Files paragraph for {file})' if file else 'not stated (no Files: * paragraph)'
    return _summary(para)


def _pick_resolution(images, max_width):
    """The largest image at most ``max_width`` wide (0 = any); the smallest when none is that narrow."""
    from PIL import Image
    sizes = {}
    for path in images:
        with Image.open(path) as img:
            sizes[path] = img.size  # (W, H) from the header, no decoding
    def key(p):
        # the package's files of one size are often copies under other size names: prefer the true name
        w, h = sizes[p]
        return w * h, os.path.splitext(os.path.basename(p))[0] == f'{w}x{h}', p

    fitting = [p for p in images if max_width <= 0 or sizes[p][0] <= max_width]
    if fitting:
        return max(fitting, key=key), sizes
    return min(images, key=lambda p: (key(p)[0], not key(p)[1], p)), sizes


def plasma_wallpaper_photos(workdir, deb=None, max_width=PLASMA_MAX_WIDTH):
    """Records of the photographs in Debian ``plasma-workspace-wallpapers``, one resolution each.

    Args:
        workdir (str): Cache folder for the .deb and its tree.
        deb (str | None): An already downloaded ``plasma-workspace-wallpapers_*.deb``.
        max_width (int): Take the largest image of a wallpaper at most this wide (0 = the largest).

    Returns:
        list[dict]: path, name (``plasma_<wallpaper>``), source (package, file, size), licence (the
        wallpaper's metadata licence and the package's debian/copyright), author.
    """
    deb, tree = unpack_deb(PLASMA_PACKAGE, workdir, deb, flag='--plasma_deb')
    package_licence = debian_copyright(os.path.join(tree, PLASMA_COPYRIGHT))
    records = []
    for name in PLASMA_PHOTOS:
        folder = os.path.join(tree, PLASMA_DATA, name)
        images = sorted(glob.glob(os.path.join(glob.escape(folder), 'contents', 'images', '*')))
        if not images:
            continue
        path, sizes = _pick_resolution(images, max_width)
        licence, author = wallpaper_metadata(folder)
        w, h = sizes[path]
        rel = os.path.relpath(path, tree)
        records.append(dict(path=path, name=f'plasma_{name}', author=author,
                            source=f'Debian {os.path.basename(deb)}: {rel} ({w}x{h}), by {author}',
                            licence=f'{licence} (wallpaper metadata; author {author}); package debian/copyright: '
                                    f'{package_licence}'))
    return records


def _paragraph_photos(tree, deb, copyright_rel, files, name_of, max_width):
    """Records of photos whose licence is their own ``Files`` paragraph of the package's debian/copyright.

    Args:
        tree (str): The unpacked package. deb (str): Its .deb (named in the source).
        copyright_rel (str): The debian/copyright file in ``tree``.
        files (list[tuple[str, str]]): (path in ``tree``, path in the source tree that ``Files`` names).
        name_of (callable): File stem -> record name.
        max_width (int): Wider photos are downscaled to this width when loaded (0 = keep the size).
    """
    from PIL import Image
    copyright_file = os.path.join(tree, copyright_rel)
    paragraphs = copyright_paragraphs(copyright_file) if os.path.isfile(copyright_file) else []
    records = []
    for rel, source_path in files:
        path = os.path.join(tree, rel)
        if not os.path.isfile(path):
            continue
        with Image.open(path) as img:
            w, h = img.size  # from the header, no decoding
        # each photo has its own paragraph, named by its path in the source tree; its Copyright is the photographer
        para = covering_paragraph(paragraphs, source_path)
        licence = _summary(para) if para else f'not stated (no Files paragraph in {copyright_rel})'
        author = _holders(para) if para else 'unknown'
        resize = f', downscaled to {max_width} px wide when loaded' if 0 < max_width < w else ''
        stem = os.path.splitext(os.path.basename(rel))[0]
        records.append(dict(path=path, name=name_of(stem), author=author, max_width=max_width,
                            source=f'Debian {os.path.basename(deb)}: {rel} ({w}x{h}{resize}), by {author}',
                            licence=f'{licence}; package debian/copyright, Files: {source_path}'))
    return records


def lomiri_wallpaper_photos(workdir, deb=None, max_width=LOMIRI_MAX_WIDTH):
    """Records of the photographs in Debian ``lomiri-wallpapers-16.04``, each with its own licence.

    Args:
        workdir (str): Cache folder for the .deb and its tree.
        deb (str | None): An already downloaded ``lomiri-wallpapers-16.04_*.deb``.
        max_width (int): Wider photos are downscaled to this width when loaded (0 = keep the size).

    Returns:
        list[dict]: path, name (``lomiri_<name before _by_>``), source (package, file, size, author),
        licence (the file's License and Copyright in debian/copyright), author (that Copyright),
        max_width (honoured by ``gather_photos``).
    """
    deb, tree = unpack_deb(LOMIRI_PACKAGE, workdir, deb, flag='--lomiri_deb')
    files = [(f'{LOMIRI_DATA}/{stem}.jpg', f'{LOMIRI_SOURCE_DIR}/{stem}.jpg') for stem in LOMIRI_PHOTOS]
    return _paragraph_photos(tree, deb, LOMIRI_COPYRIGHT, files, lambda stem: f'lomiri_{stem.split("_by_")[0]}',
                             max_width)


def mate_background_photos(workdir, deb=None, max_width=MATE_MAX_WIDTH):
    """Records of the photographs in Debian ``mate-backgrounds`` (its nature/ folder), each with its own licence.

    Args:
        workdir (str): Cache folder for the .deb and its tree.
        deb (str | None): An already downloaded ``mate-backgrounds_*.deb``.
        max_width (int): Wider photos are downscaled to this width when loaded (0 = keep the size).

    Returns:
        list[dict]: as ``lomiri_wallpaper_photos``, named ``mate_<file stem>``.
    """
    deb, tree = unpack_deb(MATE_PACKAGE, workdir, deb, flag='--mate_deb')
    files = [(f'{MATE_DATA}/{stem}.jpg', f'{MATE_SOURCE_DIR}/{stem}.jpg') for stem in MATE_PHOTOS]
    return _paragraph_photos(tree, deb, MATE_COPYRIGHT, files, lambda stem: f'mate_{stem}', max_width)
