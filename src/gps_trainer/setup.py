import os
from glob import glob

from setuptools import find_packages, setup

package_name = 'gps_trainer'
# gps_trainer is also the bringup package: the repository's config/, launch/ and rviz/ go to
# share/gps_trainer (ament convention), where gps_core.tasks.repo_root() finds them once installed.
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.relpath(os.path.join(HERE, '..', '..'), os.getcwd())


def _tree(folder, patterns):
    # data_files entries (share/gps_trainer/<subfolder>, [files]) for every file under REPO/folder.
    out = {}
    for pattern in patterns:
        for path in glob(os.path.join(REPO, folder, '**', pattern), recursive=True):
            if os.path.isfile(path):
                rel = os.path.relpath(os.path.dirname(path), REPO)
                out.setdefault(os.path.join('share', package_name, rel), []).append(path)
    return sorted((dest, sorted(files)) for dest, files in out.items())


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        *_tree('config', ['*.yaml', '*.json']),
        *_tree('launch', ['*.launch.py', '*.sdf']),
        *_tree('rviz', ['*.rviz']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='gps-ros2 developers',
    maintainer_email='dev@gps-ros2.invalid',
    description='GPS trainer node and library: dynamics, trajectory optimization, costs, algorithms, policy optimization, storage; the gps CLI.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'gps_trainer = gps_trainer.trainer_node:main',
            'gps = gps_trainer.cli:main',
        ],
    },
)
