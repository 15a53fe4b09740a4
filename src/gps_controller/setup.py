from setuptools import find_packages, setup

package_name = 'gps_controller'

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
    description='20 Hz torque controller node running linear-Gaussian or neural (CNN/MLP) policies; policies, observation assembly, safety, message conversion.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'gps_controller = gps_controller.controller_node:main',
        ],
    },
)
