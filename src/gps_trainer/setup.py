from setuptools import find_packages, setup

package_name = 'gps_trainer'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
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
