"""finpercep-basicsr: fine-grained reward models and RLHF for real-world super-resolution, as a BasicSR plugin."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_requirements(name):
    with open(os.path.join(HERE, name)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


setup(
    name='finpercep-basicsr',
    version='0.1.0',
    description='FinPercep-RM fine-grained reward model and RLHF with curriculum learning for BasicSR',
    long_description=open(os.path.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['finpercep_basicsr', 'finpercep_basicsr.*']),
    python_requires='>=3.9',
    install_requires=['torch>=2.0', 'torchvision'] + read_requirements('requirements.txt'),
    extras_require={'dev': read_requirements('requirements-dev.txt')},
    entry_points={'console_scripts': [
        'finpercep-train=finpercep_basicsr.train:main',
        'finpercep-test=finpercep_basicsr.test:main',
    ]},
    license='Apache-2.0',
)
